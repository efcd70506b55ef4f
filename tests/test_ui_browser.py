"""A real browser walks the whole studio on the demo model, in Chinese, then photographs it in English.

Debian's Chromium driven by Playwright (never `playwright install`: that downloads). Screenshots of
every tab in zh and en land in test-artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_ui_api import free_port

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-quic"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
TABS = {"zh": ["模型", "数据", "参数", "训练", "对话"], "en": ["Model", "Dataset", "LoRA & training", "Train", "Chat"]}
NAMES = ["model", "data", "params", "train", "chat"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's "
                                "chromium and fonts-wqy-microhei (see .ci/run) to run the browser test")


@pytest.fixture
def studio_url(workspace, demo_model_dir):
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    shutil.copytree(demo_model_dir, workspace / "models" / "demo-tiny")
    state = Studio()  # follows the browser's language
    demo = build_app(state)
    url, _ = launch(demo, state, port=free_port(), block=False)
    yield url
    if state.slot.job is not None and state.slot.job.is_active:
        state.slot.job.stop()
        state.slot.job.join(30)
    demo.close()


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def open_tab(page, lang: str, name: str):
    page.get_by_role("tab", name=TABS[lang][NAMES.index(name)], exact=True).click()


def shoot(page, lang: str, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    open_tab(page, lang, name)
    page.wait_for_timeout(1500)  # let plots and tables draw
    page.screenshot(path=str(SHOTS / f"{lang}-{NAMES.index(name) + 1}-{name}.png"), full_page=True)


def truncated_pixels(png: bytes) -> int:
    """How many pixels of a screenshot have the histogram's "truncated" red (#d9534f)."""
    from io import BytesIO

    from PIL import Image

    pixels = Image.open(BytesIO(png)).convert("RGB").getdata()
    return sum(abs(r - 0xD9) < 12 and abs(g - 0x53) < 12 and abs(b - 0x4F) < 12 for r, g, b in pixels)


def status_step(page) -> int:
    found = re.search(r"步 (\d+)/", page.inner_text("#train-status-text"))
    return int(found.group(1)) if found else 0


def test_whole_flow_in_a_browser(studio_url, browser):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(studio_url)
    page.get_by_text("LoRA 微调工作室").wait_for()
    shoot(page, "zh", "model")

    # dataset: table, doctor, and the inspector's highlighted training tokens with the end token
    open_tab(page, "zh", "data")
    page.locator("#data-table").get_by_text("你是谁？", exact=True).first.wait_for()
    page.locator("#data-doctor").get_by_text("记录数").wait_for()
    page.locator("#inspector-tokens").get_by_text("<|im_end|>⟂").wait_for()
    highlighted = page.locator("#inspector-tokens .token.highlighted")
    assert highlighted.count() > 10 and "臣妾" in "".join(highlighted.all_inner_texts())
    shoot(page, "zh", "data")

    # a second load redraws the doctor's histogram: a cutoff inside the lengths paints bars red
    red = {}
    for cutoff in ("60", "256"):
        page.locator("#field-cutoff_len input").fill(cutoff)
        page.click("#data-load")
        page.wait_for_function("c => (document.querySelector('#data-doctor')?.innerText || '')"
                               ".includes('截断长度 ' + c)", arg=cutoff)
        page.wait_for_timeout(1500)
        red[cutoff] = truncated_pixels(page.locator("#data-histogram").screenshot())
    assert red["60"] > 20 * max(red["256"], 50), red  # only the legend's swatch is red at 256

    # a bad path is a message with a heading, not a traceback, and the page goes on working
    files = page.get_by_label("数据文件")
    files.fill("data/no-such-file.json")
    page.click("#data-load")
    page.get_by_text("数据有问题 · Dataset problem").first.wait_for()
    page.get_by_text("no-such-file.json").first.wait_for()
    assert "Traceback" not in page.content()
    files.fill("data/huanhuan_sample.json")

    # parameters: a short run
    open_tab(page, "zh", "params")
    max_steps = page.locator("#field-max_steps input")
    max_steps.fill("60")
    max_steps.press("Tab")
    page.locator("#settings-yaml").get_by_text("max_steps").wait_for()
    assert "--set max_steps=60" in page.inner_text("#settings-cli")
    shoot(page, "zh", "params")

    # train: start, watch progress and the loss plot, reload mid-run, see it re-attach, see it finish
    open_tab(page, "zh", "train")
    page.click("#train-start")
    page.wait_for_function("() => /步 ([1-9]\\d*)\\/60/.test(document.querySelector('#train-status-text')"
                           "?.innerText || '')")
    page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for()
    before = status_step(page)
    page.reload()
    open_tab(page, "zh", "train")
    page.wait_for_function("() => /步 \\d+\\/60/.test(document.querySelector('#train-status-text')"
                           "?.innerText || '')")
    assert status_step(page) >= before
    assert re.search(r"状态: (running|completed)", page.inner_text("#train-status-text"))
    page.wait_for_function("() => (document.querySelector('#train-status-text')?.innerText || '')"
                           ".includes('completed')", timeout=150_000)
    assert status_step(page) == 60
    shoot(page, "zh", "train")

    # chat: the probe prompt gets two different answers
    open_tab(page, "zh", "chat")
    page.locator("#chat-adapter input").wait_for()
    page.wait_for_function("() => (document.querySelector('#chat-adapter input')?.value || '').includes('completed')")
    page.get_by_role("button", name="你是谁？", exact=True).click()
    page.wait_for_function(f"() => [...document.querySelectorAll('#chat-base .message-row.bot-row, #chat-tuned .message-row.bot-row')]"
                           ".filter(e => e.innerText.trim()).length >= 2")
    page.wait_for_timeout(2000)  # let both streams end
    base = page.locator("#chat-base .message-row.bot-row").last.inner_text()
    tuned = page.locator("#chat-tuned .message-row.bot-row").last.inner_text()
    assert base.strip() and tuned.strip() and base != tuned, (base, tuned)
    shoot(page, "zh", "chat")
    context.close()

    english = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    page = english.new_page()
    page.set_default_timeout(60_000)
    page.goto(studio_url)
    page.get_by_text("LoRA Studio", exact=True).wait_for()
    for name in NAMES:
        shoot(page, "en", name)
    assert "Start training" in page.content()
    english.close()
