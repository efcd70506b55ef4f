"""Issue 12 item 1: a chat-only demo of one run, from the CLI and from the chat tab's Publish demo panel.

What a visitor can reach is the chat and nothing else (the API, the components, Gradio's own file
routes); answers stream and equal the chat engine's greedy ones; --share or a reachable --host
without a login is refused (CLI and panel); the CLI's login is enforced and rate-limited; the
studio's panel shows a demo's link and stopping it closes its server.
"""

from __future__ import annotations

import json
import string
import time

import httpx
import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from .studio_fixture import close_studio, free_port, launch_studio  # noqa: E402
from .test_ui_exposure import login  # noqa: E402
from .test_ui_security import refused  # noqa: E402
from .tiny_model_fixture import train_tiny_run  # noqa: E402

NEW_TOKENS = 12
GREEDY = {"temperature": 0, "repetition_penalty": 1.0, "max_new_tokens": NEW_TOKENS}
PAGE_TYPES = {"accordion", "button", "chatbot", "checkbox", "column", "form", "markdown", "row", "state", "textbox"}
HANDLERS = {"on_message_submit", "<lambda>", "on_clear_click", "on_show_base_change", "on_page_load"}


@pytest.fixture(scope="module")
def palace(tmp_path_factory, demo_model_dir):
    """A workspace with one finished tiny run, "palace" (its probe set is the default one)."""
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("demo") / "workspace")
    return ws, train_tiny_run(demo_model_dir, ws, "palace")


@pytest.fixture(scope="module")
def engine(palace):
    """The chat engine on the run's final adapter: what the demo must answer, token for token."""
    from lora_studio.chat import ChatEngine

    ws, run = palace
    engine = ChatEngine(ws)
    engine.load_run(run / "adapter")
    return engine


def greedy_answers(engine, tuned: list[dict], base: list[dict] | None = None) -> tuple[str, str]:
    from lora_studio.sampling import SamplingConfig

    return engine.answer(tuned, "", SamplingConfig(**GREEDY), base_messages=base)


@pytest.fixture(scope="module")
def served(palace):
    from lora_studio.sampling import SamplingConfig
    from lora_studio.ui.demo_app import DemoServer, demo_spec, run_adapter

    ws, run = palace
    spec = demo_spec(run_adapter(run), sampling=SamplingConfig(**GREEDY), panes="side-by-side")
    server = DemoServer(spec, ws).start(port=free_port())
    yield server
    server.stop()


def texts(history: list) -> list[str]:
    """A chatbot value's messages as plain text (Gradio 6 hands content back as parts)."""
    return ["".join(part["text"] for part in m["content"]) if isinstance(m["content"], list) else m["content"]
            for m in history]


def page_config(url: str, **kwargs) -> dict:
    return httpx.get(url.rstrip("/") + "/config", **kwargs).json()


# --- what a visitor can reach --------------------------------------------------------------------
def test_the_demo_exposes_the_chat_and_nothing_else(served, palace):
    _, run = palace
    url = served.local_url
    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    assert api["unnamed_endpoints"] == {}
    assert {name: [p["parameter_name"] for p in e["parameters"]] for name, e in api["named_endpoints"].items()} == \
        {"/chat": ["message"]}  # no history, no file, no path: one question
    assert "FileData" not in json.dumps(api["named_endpoints"]["/chat"]["parameters"])
    config = page_config(url)
    types = {c["type"] for c in config["components"]}
    assert types <= PAGE_TYPES, types - PAGE_TYPES  # no file, upload, dropdown of runs, ...
    typed = [c for c in config["components"] if c["type"] == "textbox" and c["props"].get("interactive") is not False]
    assert [c["props"]["elem_id"] for c in typed] == ["demo-input"]  # the one box a visitor types in
    public = [d["api_name"] for d in config["dependencies"] if d["api_visibility"] != "private"]
    assert public == ["chat"]
    # every event, private ones included, runs one of the page's own small handlers
    assert {fn.fn.__name__ for fn in served.blocks.fns.values()} == HANDLERS
    # Gradio's routes that take files or read them are closed; the page itself opens
    assert httpx.post(url + "gradio_api/upload", files={"files": ("a.json", b"[]")}).status_code == 404
    assert httpx.get(url + f"gradio_api/file={run / 'config.yaml'}").status_code == 404
    assert httpx.get(url + "gradio_api/runs").status_code == 404
    assert httpx.get(url).status_code == 200
    assert config["title"] == "palace"  # the persona's name: the run's, its system prompt names none


def test_answers_stream_and_equal_the_chat_engines_greedy_ones(served, engine):
    probe = served.spec.examples[0]
    assert served.spec.examples[:3] == ("你是谁？", "你的父亲是谁？", "皇上最近可好？")  # the run's probe set
    client = Client(served.local_url, verbose=False)
    updates = list(client.submit(message=probe, api_name="/chat"))
    base, tuned = greedy_answers(engine, [{"role": "user", "content": probe}])
    streamed = [texts(update[1])[-1] for update in updates]
    assert len(updates) >= 3 and streamed[-1] == tuned, (streamed, tuned)
    assert all(tuned.startswith(part) for part in streamed)  # the answer grows token by token
    final = updates[-1]
    assert final[0] == "" and texts(final[1]) == [probe, tuned] and texts(final[2]) == [probe, base]
    # the session keeps each pane's own conversation on the server
    again = client.predict(message="你好", api_name="/chat")
    base_2, tuned_2 = greedy_answers(engine, [{"role": "user", "content": probe}, {"role": "assistant", "content": tuned},
                                              {"role": "user", "content": "你好"}],
                                     [{"role": "user", "content": probe}, {"role": "assistant", "content": base},
                                      {"role": "user", "content": "你好"}])
    assert texts(again[1]) == [probe, tuned, "你好", tuned_2] and texts(again[2])[-1] == base_2


def test_a_visitor_reads_errors_in_their_own_language(served):
    chinese = Client(served.local_url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    english = Client(served.local_url, verbose=False, headers={"Accept-Language": "en-US"})
    with pytest.raises(Exception, match="请先输入一个问题"):
        chinese.predict(message="   ", api_name="/chat")
    with pytest.raises(Exception, match="Type a question first"):
        english.predict(message="", api_name="/chat")
    with pytest.raises(Exception, match="too long: 2001 characters, at most 2000"):
        english.predict(message="问" * 2001, api_name="/chat")
    on_page_load = next(fn.fn for fn in served.blocks.fns.values() if fn.fn.__name__ == "on_page_load")
    visitor = type("Request", (), {"headers": {"accept-language": "zh-CN"}})()
    assert on_page_load(visitor) == "**采样设置：** 最大生成长度 12 · 温度 0 · Top-p 0.8 · Top-k 5 · 重复惩罚 1.0 · 随机种子 42"
    translations = page_config(served.local_url)["i18n_translations"]
    assert translations["zh-CN"]["demo.send"] == "发送" and translations["en"]["demo.send"] == "Send"


# --- who may reach it ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,said", [
    (["--share"], "--share publishes the demo on the internet"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 lets others on the network open the demo"),
    (["--share", "--lang", "zh"], "--share 会把演示公开到互联网上"),
])
def test_a_demo_others_can_reach_needs_a_login(capsys, workspace, argv, said):
    from lora_studio.cli import main

    assert main(["--workspace", str(workspace), "demo", "palace", *argv]) == 2  # refused before the run is looked up
    err = capsys.readouterr().err
    assert said in err and "--auth" in err and "--insecure-no-auth" in err, err


def test_the_cli_demo_enforces_and_rate_limits_its_login(palace, engine, capsys, monkeypatch):
    import gradio as gr

    from lora_studio.cli import main

    ws, _ = palace
    served = []  # the command serves until Ctrl-C; here it hands its page over instead
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda blocks: served.append(blocks))
    monkeypatch.delenv("LORA_STUDIO_AUTH", raising=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    assert main(["--lang", "en", "--workspace", str(ws.root), "demo", "palace", "--port", str(port),
                 "--auth", "guest:pw-guest", "--temperature", "0", "--repetition-penalty", "1.0",
                 "--max-new-tokens", str(NEW_TOKENS)]) == 0
    try:
        out = capsys.readouterr().out
        assert "Loading palace (adapter) for the demo..." in out and f"Demo 'palace' is running at {url}" in out, out
        assert httpx.get(url + "config").status_code == 401  # nothing without the login
        with pytest.raises(Exception):
            Client(url, verbose=False)
        codes = [login(url, "guest", f"guess-{n}").status_code for n in range(6)]
        assert codes == [400] * 5 + [429], codes  # the studio's limiter: after 5 failures, a wait
        time.sleep(1.1)
        client = Client(url, auth=("guest", "pw-guest"), verbose=False)
        answer = client.predict(message="你是谁？", api_name="/chat")
        assert texts(answer[1])[-1] == greedy_answers(engine, [{"role": "user", "content": "你是谁？"}])[1]
        shown = {c["props"].get("elem_id"): c["props"] for c in page_config(url, cookies=client.cookies)["components"]}
        assert shown["demo-base"]["visible"] is False and shown["demo-tuned"]["visible"] is not False  # --panes toggle
    finally:
        for blocks in served:
            blocks.close(verbose=False)


# --- the studio's panel --------------------------------------------------------------------------
def test_the_studio_panel_publishes_and_stops_a_demo(palace, engine):
    ws, run = palace
    url, state, demo = launch_studio(ws, "en")
    try:
        studio = Client(url, verbose=False)
        publish = {"adapter": str(run / "adapter"), "system": "", "side_by_side": False, "login": "",
                   "api_name": "/publish_demo", **GREEDY}
        text = refused(studio, "a public link puts the demo on the internet", share=True, port=0, **publish)
        assert "Fill in the visitor login as USER:PASS" in text
        refused(studio, "the visitor login must be USER:PASS", share=True, port=0, **{**publish, "login": "guest"})
        assert state.demos == {}
        port = free_port()
        status, running = studio.predict(share=False, port=port, **publish)
        demo_url = f"http://127.0.0.1:{port}/"
        assert status == f"- **palace** (adapter): {demo_url}" and running["value"] == "palace", status
        assert list(state.demos) == ["palace"] and state.demos["palace"].engine is not state.chat  # its own model
        answer = Client(demo_url, verbose=False).predict(message="你是谁？", api_name="/chat")
        assert texts(answer[1])[-1] == greedy_answers(engine, [{"role": "user", "content": "你是谁？"}])[1]
        refused(studio, f"a demo of run palace is already running at {demo_url}", share=False, port=0, **publish)
        status, running = studio.predict(run="palace", api_name="/stop_demo")
        assert status == "No demo is running." and running["value"] is None and state.demos == {}
        with pytest.raises(httpx.ConnectError):
            httpx.get(demo_url, timeout=5)  # stopped: the server is gone
        refused(studio, "no demo of run palace is running", run="palace", api_name="/stop_demo")
    finally:
        for server in state.demos.values():
            server.stop()
        close_studio(state, demo)


# --- pieces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("system,name", [
    ("现在你要扮演皇帝身边的女人--甄嬛", "甄嬛"), ("你是甄嬛，皇上的妃子。", "甄嬛"), ("You are Ada, a helpful tutor.", "Ada"),
    ("请用古风回答。", "my-run"), ("", "my-run"),
])
def test_the_persona_is_named_by_its_system_prompt_else_by_its_run(system, name):
    from lora_studio.ui.demo_app import persona_name

    assert persona_name(system, "my-run") == name


def test_the_demo_answers_with_the_checkpoint_asked_for_else_the_best_else_the_final(palace):
    from lora_studio.errors import ModelError
    from lora_studio.probes import mark_best
    from lora_studio.ui.demo_app import run_adapter

    _, run = palace
    assert run_adapter(run, "checkpoint-1") == run / "checkpoints" / "checkpoint-1"
    with pytest.raises(ModelError, match="no adapter or checkpoint called checkpoint-9 "
                                         r"\(it has: adapter, checkpoint-2, checkpoint-1\)"):
        run_adapter(run, "checkpoint-9")
    assert run_adapter(run) == run / "adapter"  # nothing marked: the final adapter
    mark_best(run, "checkpoint-2")
    try:
        assert run_adapter(run) == run / "checkpoints" / "checkpoint-2"  # the one the evaluation marked best
        assert run_adapter(run, "adapter") == run / "adapter"
    finally:
        mark_best(run, None)


def demo_keys() -> list[str]:
    from lora_studio.i18n import CATALOGUE

    return [key for key in CATALOGUE if key.startswith("demo.")]


@pytest.mark.parametrize("key", demo_keys())
def test_each_demo_text_reads_as_chinese_and_as_english(key):
    from lora_studio.i18n import entry

    from .test_library_messages import filled
    from .ui_words import chinese, english_words, known_names

    zh, en = (entry(key)[lang] for lang in ("zh", "en"))
    fields = [{name for _, name, _, _ in string.Formatter().parse(t) if name} for t in (zh, en)]
    assert fields[0] == fields[1]
    names = known_names() | {"toggle", "side-by-side", "adapter", "checkpoint-n", "guest"}  # values to type
    assert english_words(filled(key, "zh"), names) == [], filled(key, "zh")
    assert chinese(filled(key, "en")) == [], filled(key, "en")
