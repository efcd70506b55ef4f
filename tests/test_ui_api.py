"""The studio's named endpoints, driven with gradio_client as a script or another program would.

Each test launches the real app on a free port over its own workspace holding the demo model.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from lora_studio.config import RunConfig  # noqa: E402
from lora_studio.ui.form import values_for  # noqa: E402

from .conftest import ROOT  # noqa: E402

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
SAMPLE = str(ROOT / "data" / "huanhuan_sample.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(**changes) -> list:
    """Widget values for /start_training, /load_dataset, ...: the demo preset's settings plus changes."""
    base = dict(data_files=[SAMPLE], system_prompt=SYSTEM, cutoff_len=256, lora_dropout=0.0,
                learning_rate=3e-3, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                lr_scheduler_type="constant", logging_steps=2, save_steps=10)
    return values_for(RunConfig(**{**base, **changes}))


@pytest.fixture
def studio(workspace, demo_model_dir):
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    shutil.copytree(demo_model_dir, workspace / "models" / "demo-tiny")
    state = Studio(lang="en")
    demo = build_app(state)
    url, _ = launch(demo, state, port=free_port(), block=False)
    client = Client(url, verbose=False)
    yield client, state
    job = state.slot.job
    if job is not None and job.is_active:
        job.stop()
        job.join(30)
    demo.close()


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


def test_load_and_inspect_dataset(studio):
    client, _ = studio
    table, page, pages, doctor, histogram = client.predict(*settings(), api_name="/load_dataset")
    rows = table["data"]
    assert len(rows) == 20 and rows[0][2] == "你是谁？" and "甄嬛" in rows[0][3]
    assert page == 1 and pages == "/ 6"
    assert "| Records | 102 |" in doctor and "Longer than cutoff_len 256" in doctor
    bars = histogram["data"]
    assert sum(row[1] for row in bars) == 102
    labels = list(dict.fromkeys(row[0] for row in bars))
    assert labels == sorted(labels)  # the plot orders its bars alphabetically: that must be by length
    assert {row[2] for row in bars} == {"fits", "partly truncated", "truncated"}  # a fixed colour legend

    segments, summary = client.predict(1, *settings(), api_name="/inspect_record")
    trained = "".join(s["token"] for s in segments if s["class_or_confidence"] == "trained · 训练")
    ends = [s["token"] for s in segments if s["class_or_confidence"] == "end token · 结束符"]
    prompt = "".join(s["token"] for s in segments if s["class_or_confidence"] is None)
    assert "臣妾甄嬛" in trained and "你是谁" not in trained and "你是谁" in prompt
    assert ends == ["<|im_end|>⟂"]
    assert "trained" in summary

    table, page, _ = client.predict(6, *settings(), api_name="/dataset_page")
    assert page == 6 and [r[0] for r in table["data"]] == list(range(101, 103))


def test_dataset_errors_are_readable_messages(studio):
    client, _ = studio
    with pytest.raises(Exception) as error:
        client.predict(*settings(data_files=["no/such/file.json"]), api_name="/load_dataset")
    assert "no/such/file.json" in str(error.value) and "Traceback" not in str(error.value)
    with pytest.raises(Exception) as error:
        client.predict(500, *settings(), api_name="/inspect_record")
    assert "there is no record 500" in str(error.value) and "1 to 102" in str(error.value)
    bad = settings()
    bad[list(RunConfig().to_dict()).index("cutoff_len")] = 3
    with pytest.raises(Exception) as error:
        client.predict(*bad, api_name="/preflight")
    assert "less than minimum value 16" in str(error.value)  # the number widget's own bound
    with pytest.raises(Exception) as error:
        client.predict(*settings(target_modules=["wq_proj"]), api_name="/preflight")
    assert "target_modules names wq_proj" in str(error.value) and "q_proj" in str(error.value)
    # the app is still up and answering
    assert client.predict(api_name="/training_progress")["state"] == ""


def test_settings_views_and_presets(studio):
    client, state = studio
    values = client.predict("demo-tiny", api_name="/load_preset")
    config = dict(zip(RunConfig().to_dict(), values))
    assert config["learning_rate"] == 3e-3 and config["num_train_epochs"] == 25
    yaml_text, command = client.predict("demo-tiny", *settings(max_steps=7), api_name="/settings_yaml")
    assert "max_steps: 7" in yaml_text
    assert command.startswith("python studio.py train") and "--set max_steps=7" in command
    client.predict("my preset", *settings(r=4), api_name="/save_preset")
    assert "r: 4" in (state.workspace / "presets" / "my-preset.yaml").read_text(encoding="utf-8")
    # saving under a name that exists keeps the old preset, bundled or the user's
    client.predict("my preset", *settings(r=16), api_name="/save_preset")
    client.predict("demo-tiny", *settings(r=32), api_name="/save_preset")
    assert "r: 4" in (state.workspace / "presets" / "my-preset.yaml").read_text(encoding="utf-8")
    assert "r: 16" in (state.workspace / "presets" / "my-preset-2.yaml").read_text(encoding="utf-8")
    assert (state.workspace / "presets" / "demo-tiny-2.yaml").is_file()
    assert not (state.workspace / "presets" / "demo-tiny.yaml").exists()


def test_train_poll_refuse_second_start_and_stop(studio):
    client, state = studio
    started = client.predict(*settings(max_steps=400, save_steps=5), api_name="/start_training")
    assert "Training started" in started
    with pytest.raises(Exception) as error:
        client.predict(*settings(), api_name="/start_training")
    assert "already in progress" in str(error.value)
    progress = wait_for(client, lambda p: p["step"] >= 6)
    assert progress["state"] == "running" and progress["total_steps"] == 400 and progress["losses"]
    assert "Stopping" in client.predict(api_name="/stop_training")
    final = wait_for(client, lambda p: p["state"] not in ("running", "stopping"))
    assert final["state"] == "stopped" and final["step"] < 400
    assert (state.slot.job.run_dir / "adapter" / "adapter_config.json").is_file()


def test_chat_compares_base_and_tuned(studio):
    client, _ = studio
    client.predict(*settings(max_steps=40), api_name="/start_training")
    wait_for(client, lambda p: p["state"] == "completed")
    adapter = client.predict(None, api_name="/list_adapters")["value"]
    assert adapter.endswith("adapter")
    message, base, tuned = client.predict("你是谁？", adapter, "", SYSTEM, [], [], 48, 0, 0.8, 5, 1.1, 42,
                                          api_name="/chat_compare")
    base_answer, tuned_answer = base[-1]["content"][0]["text"], tuned[-1]["content"][0]["text"]
    assert message == "" and base[0]["content"][0]["text"] == "你是谁？"
    assert base_answer and tuned_answer and base_answer != tuned_answer


def test_share_without_auth_is_refused(capsys):
    from lora_studio.cli import main

    assert main(["--share"]) == 2
    err = capsys.readouterr().err
    assert "--auth USER:PASS" in err and "--share-without-auth" in err


def test_i18n_tables_cover_every_setting():
    from lora_studio.config import fields_by_name
    from lora_studio.ui.i18n import build_i18n, language_of, table

    zh, en = table("zh"), table("en")
    assert zh.keys() == en.keys()
    assert zh["field.learning_rate"] == "学习率" and en["field.learning_rate"] == "learning_rate"
    assert all(zh[f"help.{name}"] for name in fields_by_name())
    forced = build_i18n("zh").translations_dict
    assert forced["en"]["tab.model"] == "模型" == forced["zh-CN"]["tab.model"]

    class Request:
        headers = {"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"}

    assert language_of(Request()) == "zh" and language_of(Request(), forced="en") == "en"
    assert language_of(None) == "en"


def test_building_the_app_imports_no_ml_library():
    code = ("import sys; from lora_studio.ui.app import build_app; from lora_studio.ui.state import Studio; "
            "build_app(Studio()); print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_model_tab_downloads_with_progress_and_errors(studio, demo_model_dir, tmp_path, monkeypatch):
    from modelscope_hub.config import set_default_config

    from .modelscope_server import FakeModelScope

    client, state = studio
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    set_default_config(None)  # the client reads its settings once per process
    try:
        with FakeModelScope({"Owner/tiny": demo_model_dir}) as fake:
            monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
            progress, _timer = client.predict("Owner/tiny", "modelscope", "", api_name="/download_model")
            assert "Owner/tiny" in progress and "<progress" in progress
            assert state.download.join(60) and state.download.state == "completed"
            _choices, table = client.predict("Owner/tiny", api_name="/refresh_models")
            assert ["Owner/tiny", "✓"] in [[row[0], row[2]] for row in table["data"]]  # listed, complete
            facts = client.predict("Owner/tiny", False, api_name="/model_facts")
            assert "llama" in facts and "2 × 64" in facts  # read from the downloaded config

            client.predict("Owner/missing", "modelscope", "", api_name="/download_model")
            assert state.download.join(30) and state.download.state == "failed"
            assert "no model with this id on ModelScope" in str(state.download.error)
            with pytest.raises(Exception) as error:
                client.predict("demo-tiny", "modelscope", "", api_name="/download_model")
            assert "built locally, not downloaded" in str(error.value)
    finally:
        set_default_config(None)


def test_a_busy_port_is_a_clear_message(workspace):
    from lora_studio.errors import ConfigError
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = Studio(lang="en")
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            launch(build_app(state), state, port=port, block=False)


def test_an_upload_never_replaces_a_different_dataset_of_the_same_name(tmp_path):
    from lora_studio.ui.dataset_view import keep_upload

    first, second, folder = tmp_path / "a" / "qa.json", tmp_path / "b" / "qa.json", tmp_path / "data"
    for path, answer in ((first, "x"), (second, "y")):
        path.parent.mkdir()
        path.write_text(f'[{{"instruction": "q", "output": "{answer}"}}]', encoding="utf-8")
    assert keep_upload(first, folder) == folder / "qa.json"
    assert keep_upload(second, folder) == folder / "qa-2.json"  # another file of the same name
    assert keep_upload(first, folder) == folder / "qa.json"  # the same bytes again: no new copy
    assert (folder / "qa.json").read_text(encoding="utf-8") == first.read_text(encoding="utf-8")
    assert sorted(p.name for p in folder.iterdir()) == ["qa-2.json", "qa.json"]


def test_loss_plot_names_every_curve_before_its_first_point():
    from lora_studio.events import Evaluation, Progress
    from lora_studio.ui.tab_train import CURVE, RAW, SMOOTHED, VALIDATION, loss_frame

    assert set(loss_frame([])[CURVE]) == {RAW, SMOOTHED, VALIDATION} and loss_frame([])["loss"].isna().all()
    steps = [Progress(step=s, total_steps=20, epoch=0.0, loss=2.0 / s) for s in (5, 10)]
    frame = loss_frame(steps)
    assert list(frame[CURVE]) == [RAW, SMOOTHED, RAW, SMOOTHED, VALIDATION]
    assert frame["loss"].isna().tolist() == [False] * 4 + [True]  # named, but nothing drawn yet
    assert frame[frame[CURVE] == SMOOTHED]["loss"].tolist()[0] == 0.4  # the debiased average starts at the raw value
    frame = loss_frame([*steps, Evaluation(step=10, eval_loss=0.5)])
    assert frame[frame[CURVE] == VALIDATION]["loss"].tolist() == [0.5]
