"""The studio's named endpoints, driven with gradio_client as a script or another program would.

Each test launches the real app on a free port over its own workspace holding the demo model. The
endpoints take settings by name (`learning_rate=...`), the way a script calls them.
"""

from __future__ import annotations

import shutil
import socket
import string
import subprocess
import sys
import time

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from lora_studio.config import RunConfig, fields_by_name  # noqa: E402
from lora_studio.i18n import CATALOGUE, entry  # noqa: E402
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


def test_share_without_auth_is_refused(capsys):
    from lora_studio.cli import main

    assert main(["--share"]) == 2
    err = capsys.readouterr().err
    assert "--auth USER:PASS" in err and "--insecure-no-auth" in err


def test_i18n_tables_cover_every_setting():
    from lora_studio.ui.i18n import Labels, language_of, table

    zh, en = table("zh"), table("en")
    assert zh.keys() == en.keys()
    assert zh["field.learning_rate"] == "学习率" and en["field.learning_rate"] == "learning_rate"
    assert all(zh[f"help.{name}"] for name in fields_by_name())
    assert zh["field.top_p"] == "Top-p" and zh["field.temperature"] == "温度"  # sampling settings too
    forced = Labels("zh").gradio.translations_dict
    assert forced["en"]["ui.tab_model"] == "模型" == forced["zh-CN"]["ui.tab_model"]
    with pytest.raises(KeyError):
        Labels()("ui.started")  # a text with fields is a handler's, never a label

    class Request:
        headers = {"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"}

    assert language_of(Request()) == "zh" and language_of(Request(), forced="en") == "en"
    assert language_of(None) == "en"


def test_building_the_app_imports_no_ml_library():
    code = ("import sys; from lora_studio.ui.app import build_app; from lora_studio.ui.state import Studio; "
            "from lora_studio.workspace import Workspace; build_app(Studio(Workspace.from_env())); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
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


def test_an_upload_never_replaces_a_different_dataset_of_the_same_name(tmp_path):
    from lora_studio.ui.uploads import keep_upload

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
    from lora_studio.ui.tab_train import CURVE, loss_frame

    raw, smoothed, validation = "原始", "平滑", "验证集"  # the legend is in the reader's language
    assert set(loss_frame([], "zh")[CURVE]) == {raw, smoothed, validation}
    assert loss_frame([], "zh")["loss"].isna().all()
    steps = [Progress(step=s, total_steps=20, epoch=0.0, loss=2.0 / s) for s in (5, 10)]
    frame = loss_frame(steps, "zh")
    assert list(frame[CURVE]) == [raw, smoothed, raw, smoothed, validation]
    assert frame["loss"].isna().tolist() == [False] * 4 + [True]  # named, but nothing drawn yet
    assert frame[frame[CURVE] == smoothed]["loss"].tolist()[0] == 0.4  # the debiased average starts at the raw value
    frame = loss_frame([*steps, Evaluation(step=10, eval_loss=0.5)], "en")
    assert frame[frame[CURVE] == "validation"]["loss"].tolist() == [0.5]


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


def test_widgets_come_from_the_settings_metadata():
    import gradio as gr

    from lora_studio.config import Setting
    from lora_studio.sampling import SamplingSetting, sampling_from_dict
    from lora_studio.ui.form import SettingsForm
    from lora_studio.ui.i18n import Labels

    labels = Labels("en")
    with gr.Blocks():
        form = SettingsForm(labels)
        form.render(list(fields_by_name()))
        sampling = SettingsForm(labels, SamplingConfig, sampling_from_dict, prefix="sampling")
        sampling.render_group("sampling")
    widgets = form.widgets
    assert isinstance(widgets[Setting.data_files], gr.Textbox) and widgets[Setting.data_files].lines == 2
    modules = widgets[Setting.target_modules]
    assert isinstance(modules, gr.Dropdown) and modules.allow_custom_value
    assert ("all-linear", "all-linear") in modules.choices
    assert isinstance(widgets[Setting.model_name_or_path], gr.Dropdown)
    assert widgets[Setting.gradient_checkpointing].choices == [("auto", "auto"), ("true", "true"), ("false", "false")]
    assert isinstance(widgets[Setting.dedupe], gr.Checkbox)
    # number boxes leave the bounds to the settings check (it names the field); sliders draw them
    assert widgets[Setting.learning_rate].step == 1e-5 and widgets[Setting.cutoff_len].minimum is None
    temperature, top_k = sampling.widgets[SamplingSetting.temperature], sampling.widgets[SamplingSetting.top_k]
    assert isinstance(temperature, gr.Slider) and (temperature.minimum, temperature.maximum) == (0.0, 2.0)
    assert isinstance(top_k, gr.Number) and top_k.precision is None and top_k.maximum is None
    # by keyword, whatever order the widgets hand them back in
    built = sampling.to_config({SamplingSetting.top_k: 7.0, SamplingSetting.top_p: 0.5})
    assert (built.top_k, built.top_p) == (7, 0.5)
    config = form.to_config({**settings(), Setting.gradient_checkpointing: "false",
                             Setting.data_files: "a.json\nb.json"})
    assert config.gradient_checkpointing is False and config.data_files == ["a.json", "b.json"]


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


def test_the_word_counts_see_what_they_should():
    from .ui_words import chinese, english_words, known_names

    names = known_names()
    text = ("模型 demo-tiny · 内置演示模型 0.2M ≈ 0.1 GB; 'auto' 用 bfloat16 /tmp/ws/models/demo-tiny lora_alpha / "
            "sqrt(r) Top-p 同问不同答：「Who are you」 Qwen/Qwen3-0.6B --share train.py 3.00e-03 由 LoRA Studio 生成 "
            "Token（高亮） Start training")
    assert english_words(text, names) == ["Start", "training"]
    assert chinese("Records 102 「你是谁」 · trained: 训练。") == ["训练。"]


@pytest.mark.parametrize("key", [key for key in CATALOGUE if key.startswith(("ui.", "roots."))])
def test_each_studio_text_reads_as_chinese_and_as_english(key):
    from .test_library_messages import filled
    from .ui_words import chinese, english_words, known_names

    zh, en = (entry(key)[lang] for lang in ("zh", "en"))
    fields = [{name for _, name, _, _ in string.Formatter().parse(t) if name} for t in (zh, en)]
    assert fields[0] == fields[1], "both languages take the same parameters"
    assert english_words(filled(key, "zh"), known_names()) == [], filled(key, "zh")
    assert chinese(filled(key, "en")) == [], "an English reader sees no Chinese of ours"
