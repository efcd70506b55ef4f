"""The studio's named endpoints, driven with gradio_client as a script or another program would.

Each test launches the real app on a free port over its own workspace holding the demo model. The
endpoints take settings by name (`learning_rate=...`), the way a script calls them.
"""

from __future__ import annotations

import shutil
import socket
import time

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from lora_studio.config import RunConfig, fields_by_name  # noqa: E402
from lora_studio.sampling import SamplingConfig  # noqa: E402
from lora_studio.ui.form import widget_values  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .studio_fixture import close_studio, launch_studio  # noqa: E402

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
SAMPLE = str(ROOT / "data" / "huanhuan_sample.json")


def settings(**changes) -> dict:
    """Settings by name for /start_training, /load_dataset, ...: a short demo run's, plus changes."""
    base = dict(data_files=[SAMPLE], system_prompt=SYSTEM, cutoff_len=256, lora_dropout=0.0,
                learning_rate=3e-3, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                lr_scheduler_type="constant", logging_steps=2, save_steps=10)
    return widget_values(RunConfig(**{**base, **changes}))


def launched(ws, lang: str | None, headers: dict | None = None):
    url, state, demo = launch_studio(ws, lang)
    return Client(url, verbose=False, headers=headers), state, demo


@pytest.fixture
def studio(ws, demo_model_dir):
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    client, state, demo = launched(ws, "en")
    yield client, state
    close_studio(state, demo)


def parameters(client, endpoint: str) -> list[str]:
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"][endpoint]
    return [p["parameter_name"] for p in api["parameters"]]


def wait_for(client, done, timeout=120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = client.predict(api_name="/training_progress")
        if done(progress):
            return progress
        time.sleep(0.5)
    raise AssertionError(f"timed out; last progress {progress}")


def test_named_endpoints_exist(studio):
    client, _ = studio
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/load_dataset", "/inspect_record", "/start_training", "/training_progress", "/stop_training",
            "/chat_compare", "/preflight", "/settings_yaml", "/load_preset"} <= names


def test_endpoints_take_settings_by_their_names(studio):
    client, _ = studio
    every_setting = list(fields_by_name())
    consent = "trust_remote_code"  # the session's checkbox, no setting: what loads a model takes it
    for endpoint in ("/start_training", "/load_dataset"):
        assert parameters(client, endpoint) == [*every_setting, consent], endpoint  # not param_0 ... param_34
    assert parameters(client, "/preflight") == every_setting  # reads config.json only, runs no code
    assert parameters(client, "/inspect_record") == ["record", *every_setting, consent]
    assert parameters(client, "/dataset_page") == ["page", *every_setting]
    assert parameters(client, "/resume_training") == ["run", consent]
    assert parameters(client, "/model_facts") == ["model_name_or_path", consent]
    assert parameters(client, "/settings_yaml") == ["preset", *every_setting]
    assert parameters(client, "/save_preset") == ["name", *every_setting]
    sampling = list(SamplingConfig().to_dict())
    assert parameters(client, "/chat_compare") == ["message", "adapter", "model", "system", "base_history",
                                                   "tuned_history", *sampling, consent]


def test_load_and_inspect_dataset(studio):
    client, _ = studio
    table, page, pages, doctor, histogram = client.predict(**settings(), api_name="/load_dataset")
    rows = table["data"]
    assert len(rows) == 20 and rows[0][2] == "你是谁？" and "甄嬛" in rows[0][3]
    assert page == 1 and pages == "/ 6"
    assert "| Records | 102 |" in doctor and "Longer than cutoff_len 256" in doctor
    bars = histogram["data"]
    assert sum(row[1] for row in bars) == 102
    labels = list(dict.fromkeys(row[0] for row in bars))
    assert labels == sorted(labels)  # the plot orders its bars alphabetically: that must be by length
    assert {row[2] for row in bars} == {"fits", "partly truncated", "truncated"}  # a fixed colour legend
    assert table["headers"] == ["#", "system", "user", "assistant"]

    segments, summary = client.predict(record=1, **settings(), api_name="/inspect_record")
    trained = "".join(s["token"] for s in segments if s["class_or_confidence"] == "trained")
    ends = [s["token"] for s in segments if s["class_or_confidence"] == "end token"]
    prompt = "".join(s["token"] for s in segments if s["class_or_confidence"] is None)
    assert "臣妾甄嬛" in trained and "你是谁" not in trained and "你是谁" in prompt
    assert ends == ["<|im_end|>⟂"]
    assert "trained" in summary

    table, page, _ = client.predict(page=6, **settings(), api_name="/dataset_page")
    assert page == 6 and [r[0] for r in table["data"]] == list(range(101, 103))


def test_dataset_errors_are_readable_messages(studio):
    client, _ = studio
    with pytest.raises(Exception) as error:
        client.predict(**settings(data_files=["no/such/file.json"]), api_name="/load_dataset")
    assert "no/such/file.json" in str(error.value) and "Traceback" not in str(error.value)
    assert "【Dataset problem】" in str(error.value)
    with pytest.raises(Exception) as error:
        client.predict(record=500, **settings(), api_name="/inspect_record")
    assert "there is no record 500" in str(error.value) and "1 to 102" in str(error.value)
    with pytest.raises(Exception) as error:
        client.predict(**settings(cutoff_len=3), api_name="/preflight")
    assert "'cutoff_len' is 3, outside the allowed range [16, 131072]" in str(error.value)  # the setting's bound
    with pytest.raises(Exception) as error:
        client.predict(**settings(target_modules=["wq_proj"]), api_name="/preflight")
    assert "target_modules names wq_proj" in str(error.value) and "q_proj" in str(error.value)
    # the app is still up and answering
    assert client.predict(api_name="/training_progress")["state"] == ""


def test_settings_views_and_presets(studio):
    client, state = studio
    values = client.predict(preset="demo-tiny", api_name="/load_preset")
    config = dict(zip(RunConfig().to_dict(), values))  # the form's widgets, in RunConfig's field order
    assert config["learning_rate"] == 3e-3 and config["num_train_epochs"] == 25
    yaml_text, command = client.predict(preset="demo-tiny", **settings(max_steps=7), api_name="/settings_yaml")
    assert "max_steps: 7" in yaml_text
    assert command.startswith("python studio.py train demo-tiny") and "--set max_steps=7" in command
    presets = state.workspace.presets
    client.predict(name="my preset", **settings(r=4), api_name="/save_preset")
    assert "r: 4" in (presets / "my-preset.yaml").read_text(encoding="utf-8")
    # saving under a name that exists keeps the old preset, bundled or the user's
    client.predict(name="my preset", **settings(r=16), api_name="/save_preset")
    client.predict(name="demo-tiny", **settings(r=32), api_name="/save_preset")
    assert "r: 4" in (presets / "my-preset.yaml").read_text(encoding="utf-8")
    assert "r: 16" in (presets / "my-preset-2.yaml").read_text(encoding="utf-8")
    assert (presets / "demo-tiny-2.yaml").is_file()
    assert not (presets / "demo-tiny.yaml").exists()


def test_train_poll_refuse_second_start_and_stop(studio):
    client, state = studio
    # only what differs from the page's settings (the demo preset on the bundled sample) is given
    started = client.predict(learning_rate=2e-3, max_steps=400, save_steps=5, logging_steps=2,
                             api_name="/start_training")
    assert "Training started" in started
    with pytest.raises(Exception) as error:
        client.predict(**settings(), api_name="/start_training")
    assert "already in progress" in str(error.value)
    progress = wait_for(client, lambda p: p["step"] >= 6)
    assert progress["state"] == "running" and progress["total_steps"] == 400 and progress["losses"]
    assert "Stopping" in client.predict(api_name="/stop_training")
    final = wait_for(client, lambda p: p["state"] not in ("running", "stopping"))
    assert final["state"] == "stopped" and final["step"] < 400
    run_dir = state.training.job.run_dir
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    from lora_studio.config import load_yaml
    from lora_studio.presets import load_preset

    trained = load_yaml(run_dir / "config.yaml")
    assert trained.learning_rate == 2e-3 and trained.max_steps == 400
    assert trained.num_train_epochs == load_preset("demo-tiny", state.workspace).num_train_epochs


def test_chat_compares_base_and_tuned(studio):
    client, _ = studio
    client.predict(**settings(max_steps=40), api_name="/start_training")
    wait_for(client, lambda p: p["state"] == "completed")
    adapter = client.predict(None, api_name="/list_adapters")["value"]
    assert adapter.endswith("adapter")
    # sampling by name; what is not given (top_p, top_k, ...) keeps the sliders' defaults
    message, base, tuned = client.predict(message="你是谁？", adapter=adapter, model="", system=SYSTEM,
                                          base_history=[], tuned_history=[], max_new_tokens=48, temperature=0,
                                          api_name="/chat_compare")
    base_answer, tuned_answer = base[-1]["content"][0]["text"], tuned[-1]["content"][0]["text"]
    assert message == "" and base[0]["content"][0]["text"] == "你是谁？"
    assert base_answer and tuned_answer and base_answer != tuned_answer
    # a second turn: each pane's history comes back as the page sends it (raw, see tab_chat)
    _, base, tuned = client.predict(message="你好", adapter=adapter, model="", system=SYSTEM, base_history=base,
                                    tuned_history=tuned, max_new_tokens=8, temperature=0, api_name="/chat_compare")
    assert len(base) == len(tuned) == 4 and tuned[1]["content"][0]["text"] == tuned_answer


def test_model_tab_downloads_with_progress_and_errors(studio, demo_model_dir, tmp_path, monkeypatch):
    from modelscope_hub.config import set_default_config

    from .modelscope_server import FakeModelScope

    client, state = studio
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    set_default_config(None)  # the client reads its settings once per process
    try:
        with FakeModelScope({"Owner/tiny": demo_model_dir}) as fake:
            monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
            progress, _timer = client.predict(model_name_or_path="Owner/tiny", model_source="modelscope",
                                              model_revision="", api_name="/download_model")
            assert "Owner/tiny" in progress and "<progress" in progress
            assert state.download.join(60) and state.download.state == "completed"
            _choices, table = client.predict("Owner/tiny", api_name="/refresh_models")
            assert ["Owner/tiny", "✓"] in [[row[0], row[2]] for row in table["data"]]  # listed, complete
            facts = client.predict(model_name_or_path="Owner/tiny", api_name="/model_facts")
            assert "llama" in facts and "2 × 64" in facts  # read from the downloaded config

            client.predict(model_name_or_path="Owner/missing", api_name="/download_model")
            assert state.download.join(30) and state.download.state == "failed"
            assert "no model with this id on ModelScope" in str(state.download.error)
            with pytest.raises(Exception) as error:
                client.predict(model_name_or_path="demo-tiny", api_name="/download_model")
            assert "built locally, not downloaded" in str(error.value)
    finally:
        set_default_config(None)


def test_a_busy_port_is_a_clear_message(ws):
    from lora_studio.errors import ConfigError
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = Studio(ws, lang="en")
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            launch(build_app(state), state, port=port, block=False)


def test_a_chinese_browser_gets_chinese_tables_and_errors(ws, demo_model_dir):
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    client, state, demo = launched(ws, None, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    try:
        table, _page, _pages, doctor, histogram = client.predict(**settings(), api_name="/load_dataset")
        assert table["headers"] == ["#", "系统", "用户", "助手"]
        assert "| 记录数 | 102 |" in doctor and "超过截断长度 256" in doctor
        assert {row[2] for row in histogram["data"]} == {"不截断", "部分截断", "截断"}
        with pytest.raises(Exception) as error:
            client.predict(**settings(data_files=["no/such/file.json"]), api_name="/load_dataset")
        assert "【数据有问题】" in str(error.value) and "no/such/file.json" in str(error.value)
        assert "not found" not in str(error.value)
        with pytest.raises(Exception) as error:
            client.predict(record=500, **settings(), api_name="/inspect_record")
        assert "没有第 500 条记录" in str(error.value) and "1 到 102" in str(error.value)
    finally:
        close_studio(state, demo)


def test_errors_are_escaped_and_debug_logs_every_traceback(ws, monkeypatch, caplog):
    import gradio as gr

    from lora_studio.errors import DataError
    from lora_studio.i18n import msg
    from lora_studio.ui.state import Studio

    studio = Studio(ws, lang="en")

    @studio.guarded
    def ours():
        raise DataError(msg("ui.no_record", number=3), "<b>file.json</b>")

    @studio.guarded
    def bug():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error) as error:
        ours()
    assert error.value.message == "【Dataset problem】 &lt;b&gt;file.json&lt;/b&gt;: there is no record 3."
    assert "Traceback" not in caplog.text  # a user's mistake is not a bug
    with pytest.raises(gr.Error) as error:
        bug()
    assert error.value.message.startswith("【Internal error】 Internal error: ZeroDivisionError: division by zero")
    assert "Traceback" in caplog.text
    caplog.clear()
    monkeypatch.setenv("LORA_STUDIO_DEBUG", "1")
    with pytest.raises(gr.Error):
        ours()
    assert "Traceback" in caplog.text and "DataError" in caplog.text


def test_model_facts_are_in_the_readers_language_once(ws):
    from lora_studio.catalog import find_entry
    from lora_studio.ui.tab_model import catalog_table, model_facts

    entry = find_entry("IndexTeam/Index-1.9B-Chat")
    zh = model_facts("IndexTeam/Index-1.9B-Chat", False, ws, "zh")
    assert "| 参数量 | 2.17B |" in zh and "| 本地位置 | 尚未下载 |" in zh
    assert entry.notes("zh") in zh and entry.licence_text("zh") in zh
    assert entry.notes("en") not in zh and entry.licence_text("en") not in zh  # shown once, not in both
    en = model_facts("IndexTeam/Index-1.9B-Chat", False, ws, "en")
    assert "| parameters | 2.17B |" in en and entry.notes("en") in en and entry.notes("zh") not in en
    unknown = model_facts("someone/unknown-model", False, ws, "zh")
    assert "不在目录中" in unknown
    assert list(catalog_table("zh").columns)[:3] == ["模型", "ID", "参数量"]


