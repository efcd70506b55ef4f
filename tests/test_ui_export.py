"""The 导出 Export tab, driven as a user and a script would: a merged export with its proof, and bad input.

One studio over a workspace holding a finished tiny run (and a run that never saved an adapter) serves
every test in this file: the endpoints are called with gradio_client, the page's poll is the tab's own
handler, and a real browser reads the finished export in Chinese and in English (screenshots in
test-artifacts/screenshots/). No network: the llama.cpp fetch is given a bogus source package.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from lora_studio.i18n import text  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .studio_fixture import close_studio, launch_studio  # noqa: E402
from .tiny_model_fixture import PALACE_QA, train_tiny_run  # noqa: E402
from .ui_words import chinese, english_words, known_names  # noqa: E402

RUN, EMPTY = "huanhuan-1", "no-adapter-2"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
DEFAULTS = dict(checkpoint="", target="merged", quant="f16", llama_cpp_folder="", hub_id="")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_model_dir):
    """(client, studio, demo, workspace, url): the app over a finished run and a run with no adapter; it follows
    each reader's language (the client reads English)."""
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("export-tab") / "workspace")
    run_dir = train_tiny_run(demo_model_dir, ws, RUN)
    empty = ws.runs / EMPTY
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    # the run reads its model and data where the fixtures keep them: the studio is told it may
    url, state, demo = launch_studio(ws, None, allowed=(demo_model_dir, PALACE_QA.parent))
    yield Client(url, verbose=False, headers={"Accept-Language": "en-US"}), state, demo, ws, url
    job = state.exports.job
    if job is not None and job.is_active:
        job.stop()
        job.join(60)
    close_studio(state, demo)


def start(client, **changes) -> str:
    return client.predict(api_name="/start_export", **{"run": RUN, **DEFAULTS, **changes})


def refused(client, **changes) -> str:
    with pytest.raises(Exception) as caught:
        start(client, **changes)
    return str(caught.value)


def wait_until_done(client, timeout: float = 150.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = client.predict(RUN, api_name="/export_progress")
        if progress["state"] not in ("pending", "running", "stopping"):
            return progress
        time.sleep(0.5)
    raise AssertionError(f"the export did not end: {progress}")


ENGLISH = SimpleNamespace(headers={"accept-language": "en-US"})  # a page's request, as the handlers read it


def tab_handler(demo, name: str):
    """One of the Export tab's own handlers, as the page's events call it."""
    return next(f.fn for f in demo.fns.values() if f.fn.__name__ == name and f.fn.__module__.endswith("tab_export"))


@pytest.fixture(scope="module")
def merged(studio):
    """A merged export started from the tab, finished: (its folder, the tab's poll outputs)."""
    client, state, demo, ws, _ = studio
    assert start(client).startswith("Export started: huanhuan-1 → Merged model")
    progress = wait_until_done(client)
    assert progress["state"] == "completed", progress
    outputs = tab_handler(demo, "on_timer_tick")(RUN, None, None, ENGLISH)
    return Path(progress["output"]), outputs


def test_a_merged_export_shows_its_folder_and_a_proof_table_of_the_probe_prompts(studio, merged):
    from lora_studio.config import load_yaml
    from lora_studio.export_verify import probe_prompts

    ws = studio[3]
    folder, (status, log, exports, shown, result, parity, commands, _) = merged
    assert folder == ws.runs / RUN / "exports" / "merged" and (folder / "model.safetensors").is_file()
    assert "state: <b class='run-state'>completed</b>" in status and "step 4 of 4" in status
    assert "value='100.0'" in status  # the bar is full
    assert "Export ready:" in log and str(folder) in log
    assert str(folder) in result and "size: 1." in result and "MB" in result
    assert "answered all" in result and "Merged" in result
    assert shown["value"] == "merged" and shown["choices"] == ["merged"]
    prompts = probe_prompts(load_yaml(ws.runs / RUN / "config.yaml"))
    rows = parity.split("<tbody>")[1].split("</tr>")[:-1]
    assert [row.split("</td>")[0].rsplit(">", 1)[1] for row in rows] == [_html(p) for p in prompts]
    assert all(row.count("✓ same") == 1 and "✗" not in row for row in rows)  # the merged column, every prompt
    assert "<th>Studio chat</th><th>Merged</th></tr>" in parity
    assert commands["visible"] is False  # a merged model has no command to run
    assert exports.iloc[0].tolist()[:4] == ["merged", "Merged model", "whole", f"✓ {len(prompts)}/{len(prompts)} same"]


def _html(value: str) -> str:
    import html

    return html.escape(value)


def test_a_run_without_an_adapter_says_so_and_starts_nothing(studio, merged):
    client, state = studio[:2]
    before = state.exports.job
    shown = refused(client, run=EMPTY)
    assert text("export.no_adapter", "en") in shown and "Train it until at least one checkpoint is saved" in shown
    assert state.exports.job is before


def test_a_llama_cpp_folder_outside_the_roots_is_refused(studio, merged):
    client, state, _, ws, _ = studio
    before = state.exports.job
    for folder in ("/etc", str(ws.root / ".." / ".." / "outside")):
        shown = refused(client, target="gguf", llama_cpp_folder=folder)
        assert "this path is outside the folders the studio may read" in shown and "--allow-path" in shown, shown
        assert folder in shown and "Traceback" not in shown
    assert state.exports.job is before and not (ws.runs / RUN / "exports" / "gguf-f16").exists()


def test_bad_choices_get_the_studios_messages(studio, merged):
    from lora_studio import llama_cpp

    client, _, _, ws, _ = studio
    shown = refused(client, target="gguf", quant="q9_x")
    assert "unknown quant 'q9_x'" in shown and "q8_0" in shown
    shown = refused(client, checkpoint="checkpoint-99")
    assert "'checkpoint-99' is not a whole adapter or checkpoint of this run" in shown and "checkpoint-2" in shown
    if not llama_cpp.is_fetched(llama_cpp.workspace_folder(ws)):  # missing llama.cpp: how to get it
        shown = refused(client, target="ollama")
        assert "llama.cpp's converter is not here yet" in shown and "Fetch llama.cpp" in shown
    shown = refused(client, run="../../etc")
    assert "is not a run of the workspace" in shown


# --- a real browser ---------------------------------------------------------------------------------
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-quic"]
# the model's words (probe prompts, answers) and the commands to copy are data, not ours
DATA = (".export-data", "#export-commands")


def read_tab(browser, url: str, lang: str) -> tuple[str, int, list[str]]:
    """(what a reader sees on the Export tab, the proof table's rows, their verdict cells) after a screenshot."""
    locale = {"zh": "zh-CN", "en": "en-US"}[lang]
    context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000},
                                  extra_http_headers={"Accept-Language": locale})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("tab", name={"zh": "导出", "en": "Export"}[lang], exact=True).click()
    page.click("#export-run input")
    page.get_by_role("option", name=RUN, exact=True).click()
    page.locator("#export-parity tbody tr").first.wait_for()
    # Gradio's "processing" over the fields the pick refills: gone once its handlers are done
    page.wait_for_function("() => !document.body.innerText.includes('processing')")
    page.wait_for_timeout(1000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"export-{lang}.png"), full_page=True)
    marks = page.locator("#export-parity tbody tr td:nth-child(3)").all_inner_texts()
    shown = page.evaluate("""(leaveOut) => {
        document.querySelectorAll(leaveOut.join(',')).forEach(el => { el.style.display = 'none'; });
        const fields = [...document.querySelectorAll('input, textarea')]
            .filter(el => !['hidden', 'checkbox', 'file', 'radio'].includes(el.type) && el.checkVisibility())
            .flatMap(el => [el.value, el.placeholder]);
        return document.body.innerText + '\\n' + fields.join('\\n');
    }""", list(DATA))
    rows = page.locator("#export-parity tbody tr").count()
    context.close()
    return shown, rows, marks


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (see .ci/run)")
def test_the_tab_reads_in_chinese_and_in_english(studio, merged):
    from lora_studio.config import load_yaml
    from lora_studio.export_verify import probe_prompts

    sync_api = pytest.importorskip("playwright.sync_api")
    ws, url = studio[3:]
    count = len(probe_prompts(load_yaml(ws.runs / RUN / "config.yaml")))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        zh, zh_rows, zh_marks = read_tab(browser, url, "zh")
        en, en_rows, en_marks = read_tab(browser, url, "en")
        browser.close()
    assert zh_rows == en_rows == count
    assert zh_marks == ["✓ 相同"] * count and en_marks == ["✓ same"] * count
    assert "校验" in zh and "合并模型" in zh and str(ws.runs / RUN / "exports" / "merged") in zh
    words = english_words(zh, known_names())
    assert words == [], words
    assert chinese(en) == [], chinese(en)


def test_fetching_llama_cpp_is_a_job_whose_failure_is_shown(studio, merged, tmp_path, monkeypatch):
    from lora_studio import llama_cpp

    client, _, demo, ws, _ = studio
    bogus = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    bogus.write_bytes(b"not the source package")
    monkeypatch.setenv(llama_cpp.SDIST_VARIABLE, str(bogus))  # no network: the fetch reads this file
    assert client.predict(api_name="/fetch_llama_cpp").startswith("Fetching llama.cpp's converter")
    assert wait_until_done(client)["state"] == "failed"
    status = tab_handler(demo, "on_timer_tick")(RUN, "merged", None, ENGLISH)[0]
    assert "class='studio-error'" in status and "is not the llama-cpp-python 0.3.36 source package" in status
    assert not llama_cpp.is_fetched(llama_cpp.workspace_folder(ws))


def test_a_stopped_export_leaves_the_earlier_one_whole(studio, merged):
    from lora_studio.export import is_export

    client, _, demo, ws, _ = studio
    folder, _ = merged
    before = (folder / "verify.json").read_bytes()
    start(client, checkpoint="checkpoint-1")
    assert client.predict(api_name="/stop_export").startswith("Stopping")
    progress = wait_until_done(client)
    assert progress["state"] == "stopped", progress
    assert is_export(folder) and (folder / "verify.json").read_bytes() == before
    assert list(progress["exports"]) == ["merged"]  # no staging folder left behind
    status, log = tab_handler(demo, "on_timer_tick")(RUN, "merged", None, ENGLISH)[:2]
    assert "state: <b class='run-state'>stopped</b>" in status and "left nothing half-written" in log
