"""A real browser walks the whole studio on the demo model, and reads every tab as a Chinese and an English user.

Debian's Chromium driven by Playwright (never `playwright install`: that downloads). Screenshots of
every tab in zh and en land in test-artifacts/screenshots/ (git-ignored) for a person to look at.

What a reader "sees" is the page's visible text (document.body.innerText of the selected tab) plus
the visible values and placeholders of its inputs (a textarea's text, a dropdown's chosen label are
not part of innerText). The language checks leave out what is data, not our words (see DATA).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT
from .studio_fixture import close_studio, launch_studio
from .ui_words import chinese, english_words, known_names

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-quic"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
SAMPLE = str(ROOT / "data" / "huanhuan_sample.json")
TABS = {"zh": ["模型", "数据", "参数", "训练", "对话", "评估", "对比", "导出"],
        "en": ["Model", "Dataset", "LoRA & training", "Train", "Chat", "Evaluate", "Compare", "Export"]}
NAMES = ["model", "data", "params", "train", "chat", "evaluate", "compare", "export"]
LOCALES = {"zh": "zh-CN", "en": "en-US"}

# Data, whatever its language: the dataset's records, the tokens of a record as trained (token
# strings such as <|im_start|>system), the chat answers and the probe prompts (questions sent to the
# model), and the command-line preview (a program, a file, a subcommand and option names).
DATA = ("#data-table", "#inspector-tokens .textfield", "#chat-base", "#chat-tuned", ".probe", "#settings-cli",
        "#eval-grid", "#eval-samples", "#eval-controls", "#eval-probes", "#export-parity", "#export-commands",
        # the evaluation's word lists and questions are the user's data, in whatever language
        "#field-probe_prompts", "#field-persona_markers", "#field-leakage_words", "#field-control_prompts")
# The system prompt is the user's data too; the English page shows it in its box and in the YAML.
ENGLISH_DATA = DATA + ("#field-system_prompt", "#chat-system", "#settings-yaml")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's "
                                "chromium and fonts-wqy-microhei (see .ci/run) to run the browser test")


@pytest.fixture
def studio_url(ws, demo_model_dir):
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    url, state, demo = launch_studio(ws)
    yield url
    close_studio(state, demo)


@pytest.fixture(scope="module")
def trained_studio_url(tmp_path_factory, demo_model_dir):
    """A studio over a workspace with one finished run (trained through the library, a few seconds)."""
    from lora_studio.presets import load_preset
    from lora_studio.training import TrainingJob
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("trained") / "workspace")
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    config = load_preset("demo-tiny", ws).replace(data_files=[SAMPLE], max_steps=20, save_steps=10, logging_steps=2)
    job = TrainingJob(config, ws).start()
    assert job.join(300) and job.state == "completed", job.state
    url, state, demo = launch_studio(ws)
    yield url
    close_studio(state, demo)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def new_page(browser, lang: str):
    context = browser.new_context(locale=LOCALES[lang], viewport={"width": 1400, "height": 1000},
                                  extra_http_headers={"Accept-Language": LOCALES[lang]})
    page = context.new_page()
    page.set_default_timeout(60_000)
    return context, page


def open_tab(page, lang: str, name: str):
    page.get_by_role("tab", name=TABS[lang][NAMES.index(name)], exact=True).click()


def shoot(page, lang: str, name: str, prefix: str = ""):
    SHOTS.mkdir(parents=True, exist_ok=True)
    open_tab(page, lang, name)
    page.wait_for_timeout(1500)  # let plots and tables draw
    page.screenshot(path=str(SHOTS / f"{prefix}{lang}-{NAMES.index(name) + 1}-{name}.png"), full_page=True)


def visible_text(page, leave_out: tuple[str, ...]) -> str:
    """What a reader sees on the page now, without the elements in `leave_out`."""
    return page.evaluate("""(leaveOut) => {
        // display, not visibility: Chromium's innerText keeps the text of visibility:hidden elements
        const hidden = [...document.querySelectorAll(leaveOut.join(','))].map(el => [el, el.style.display]);
        hidden.forEach(([el]) => { el.style.display = 'none'; });
        const shown = el => el.checkVisibility();
        const fields = [...document.querySelectorAll('input, textarea')]
            .filter(el => !['hidden', 'checkbox', 'file'].includes(el.type) && shown(el))
            .flatMap(el => [el.value, el.placeholder]);
        const text = document.body.innerText + '\\n' + fields.join('\\n');
        hidden.forEach(([el, display]) => { el.style.display = display; });
        return text;
    }""", list(leave_out))


def tour(page, lang: str, leave_out: tuple[str, ...]) -> dict[str, str]:
    """Open each tab as a reader would, every section unfolded, and take what it shows (and a screenshot)."""
    texts = {}
    for name in NAMES:
        open_tab(page, lang, name)
        closed = page.locator(".label-wrap:not(.open)")  # folded accordions: sampling, output, ...
        for index in reversed(range(closed.count())):
            if closed.nth(index).is_visible():
                closed.nth(index).click()
        if name == "data":
            page.locator("#inspector-tokens .legend").wait_for()  # the doctor and the inspector are in
        if name == "params":
            page.click("#preflight-run")  # the pre-flight estimate is what this tab shows after one click
            page.wait_for_function("() => (document.querySelector('#preflight textarea')?.value || '').length > 20")
        shoot(page, lang, name, prefix="tour-")
        texts[name] = visible_text(page, leave_out)
    return texts


def test_a_chinese_reader_sees_no_english_words_of_ours(trained_studio_url, browser):
    context, page = new_page(browser, "zh")
    page.goto(trained_studio_url)
    page.get_by_text("LoRA 微调工作室").wait_for()
    names = known_names()
    texts = tour(page, "zh", DATA)
    # and an error's toast: a file that is not there
    open_tab(page, "zh", "data")
    page.get_by_label("数据文件").fill("data/no-such-file.json")
    page.click("#data-load")
    page.locator(".toast-body").first.wait_for()
    page.screenshot(path=str(SHOTS / "tour-zh-error.png"))
    texts["error"] = page.locator(".toast-body").first.inner_text()
    assert texts["error"].lstrip("×\n").startswith("【数据有问题】"), texts["error"]  # Gradio's own title hidden
    found = {name: english_words(text, names) for name, text in texts.items()}
    context.close()
    count = sum(len(words) for words in found.values())
    print(f"\nEnglish words of ours in the zh studio: {count}", {k: v for k, v in found.items() if v})
    assert count == 0, found


def toasts_after_load(page, url: str, field: str, value: str) -> list[str]:
    """Open the data tab afresh, type `value` into `field` and press Load: the toasts that come up."""
    page.goto(url)
    open_tab(page, "zh", "data")
    page.locator("#inspector-tokens .legend").wait_for()
    box = page.get_by_label("数据文件") if field == "data_files" else page.locator(f"#field-{field} input")
    box.fill(value)
    box.press("Tab")
    page.click("#data-load")
    page.locator(".toast-body").first.wait_for()
    page.wait_for_timeout(2500)  # a second event failing would have added its toast by now
    return [text.lstrip("×\n") for text in page.locator(".toast-body").all_inner_texts()]


def test_an_error_is_one_toast_that_names_the_field(trained_studio_url, browser):
    """A bad value typed into a number box: one toast, the field's label and range, in Chinese; the YAML says so."""
    context, page = new_page(browser, "zh")
    shown = toasts_after_load(page, trained_studio_url, "cutoff_len", "-5")
    page.screenshot(path=str(SHOTS / "error-zh-field.png"))
    assert shown == ["【设置有误】 工作室的设置：'截断长度（cutoff_len）' 为 -5，超出允许范围 [16, 131072]。"], shown
    assert english_words(shown[0], known_names()) == []
    open_tab(page, "zh", "params")
    yaml_text = page.inner_text("#settings-yaml")
    assert "# 工作室的设置：'截断长度（cutoff_len）' 为 -5" in yaml_text and "cutoff_len: " not in yaml_text, yaml_text
    # a fraction for a whole number, a dropout past its bound, and a file that is not there: one toast each
    assert toasts_after_load(page, trained_studio_url, "cutoff_len", "300.5") == [
        "【设置有误】 工作室的设置：'截断长度（cutoff_len）' 必须是整数，实际为 300.5。允许的值：16 到 131072 之间的整数。"]
    shown = toasts_after_load(page, trained_studio_url, "max_samples", "-2")
    assert len(shown) == 1 and "'最大样本数（max_samples）' 为 -2" in shown[0], shown
    shown = toasts_after_load(page, trained_studio_url, "data_files", "data/no-such-file.json")
    assert len(shown) == 1 and shown[0].startswith("【数据有问题】 data/no-such-file.json"), shown
    shown = toasts_after_load(page, trained_studio_url, "data_files", "/etc/passwd")
    page.screenshot(path=str(SHOTS / "error-zh-outside.png"))
    assert len(shown) == 1 and "不在工作室可以读写的文件夹内" in shown[0] and "root:" not in shown[0], shown
    assert english_words(shown[0], known_names()) == [], shown
    context.close()


def test_an_upload_is_kept_only_when_it_is_a_dataset(trained_studio_url, browser, tmp_path):
    import json

    good, bad = tmp_path / "宫中问答.json", tmp_path / "keys.json"
    good.write_text(json.dumps([{"instruction": "你是谁？", "output": "臣妾甄嬛。"}] * 3, ensure_ascii=False),
                    encoding="utf-8")
    bad.write_text(json.dumps({"api_key": "s3cr3t-value"}), encoding="utf-8")
    context, page = new_page(browser, "zh")
    page.goto(trained_studio_url)
    open_tab(page, "zh", "data")
    page.locator("#inspector-tokens .legend").wait_for()
    files = page.get_by_label("数据文件")
    page.locator("#data-upload input[type=file]").set_input_files(str(good))
    page.wait_for_function("() => (document.querySelector('#field-data_files textarea')?.value || '')"
                           ".includes('宫中问答.json')")
    assert "/workspace/data/宫中问答.json" in files.input_value()
    page.locator("#data-doctor").get_by_text("3", exact=True).first.wait_for()  # the doctor read the upload
    page.locator("#data-upload input[type=file]").set_input_files(str(bad))
    page.locator(".toast-body").first.wait_for()
    page.wait_for_timeout(2500)
    shown = page.locator(".toast-body").all_inner_texts()
    page.screenshot(path=str(SHOTS / "error-zh-upload.png"))
    assert len(shown) == 1 and "keys.json：这个文件不是数据集" in shown[0] and "api_key" not in shown[0], shown
    assert "宫中问答.json" in files.input_value()  # the settings still name the good upload
    context.close()


def test_an_english_reader_sees_no_chinese_but_the_data(trained_studio_url, browser):
    context, page = new_page(browser, "en")
    page.goto(trained_studio_url)
    page.get_by_text("LoRA Studio", exact=True).wait_for()
    found = {name: chinese(text) for name, text in tour(page, "en", ENGLISH_DATA).items()}
    context.close()
    print("\nChinese in the en studio, data left out:", {k: v for k, v in found.items() if v})
    assert not any(found.values()), found


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
    context, page = new_page(browser, "zh")
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
    assert page.locator("#inspector-tokens .legend").inner_text().split() == ["训练", "结束符"]
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

    # a bad path is a message with a heading, in Chinese, not a traceback, and the page goes on working
    files = page.get_by_label("数据文件")
    files.fill("data/no-such-file.json")
    page.click("#data-load")
    page.get_by_text("【数据有问题】").first.wait_for()
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

    # train: before any run, a hint where the plot will be, not an empty axis
    open_tab(page, "zh", "train")
    page.locator("#loss-hint").get_by_text("损失曲线").wait_for()
    assert not page.locator("#loss-plot").is_visible()
    shoot(page, "zh", "train", prefix="empty-")
    # start, watch progress and the loss plot, reload mid-run, see it re-attach, see it finish
    page.click("#train-start")
    page.wait_for_function("() => /步 ([1-9]\\d*)\\/60/.test(document.querySelector('#train-status-text')"
                           "?.innerText || '')")
    page.locator("#loss-plot svg").first.wait_for()
    assert not page.locator("#loss-hint").is_visible()
    before = status_step(page)
    page.reload()
    open_tab(page, "zh", "train")
    page.wait_for_function("() => /步 \\d+\\/60/.test(document.querySelector('#train-status-text')"
                           "?.innerText || '')")
    assert status_step(page) >= before
    assert re.search(r"状态：(进行中|已完成)", page.inner_text("#train-status-text"))
    page.wait_for_function("() => (document.querySelector('#train-status-text')?.innerText || '')"
                           ".includes('已完成')", timeout=150_000)
    assert status_step(page) == 60
    shoot(page, "zh", "train")

    # chat: the probe prompt gets two different answers
    open_tab(page, "zh", "chat")
    page.locator("#chat-adapter input").wait_for()
    page.wait_for_function("() => (document.querySelector('#chat-adapter input')?.value || '').includes('已完成')")
    page.get_by_role("button", name="你是谁？", exact=True).click()
    page.wait_for_function("() => [...document.querySelectorAll('#chat-base .message-row.bot-row, "
                           "#chat-tuned .message-row.bot-row')].filter(e => e.innerText.trim()).length >= 2")
    page.wait_for_timeout(2000)  # let both streams end
    base = page.locator("#chat-base .message-row.bot-row").last.inner_text()
    tuned = page.locator("#chat-tuned .message-row.bot-row").last.inner_text()
    assert base.strip() and tuned.strip() and base != tuned, (base, tuned)
    shoot(page, "zh", "chat")
    context.close()

    context, page = new_page(browser, "en")
    page.goto(studio_url)
    page.get_by_text("LoRA Studio", exact=True).wait_for()
    for name in NAMES:
        shoot(page, "en", name)
    assert "Start training" in page.content()
    context.close()
