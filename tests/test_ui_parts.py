"""The studio's pieces that need no running server: texts, widgets, plots, uploads, start-up cost."""

from __future__ import annotations

import string
import subprocess
import sys

import pytest

pytest.importorskip("gradio")

from lora_studio.config import fields_by_name  # noqa: E402
from lora_studio.i18n import CATALOGUE, entry  # noqa: E402
from lora_studio.sampling import SamplingConfig  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .test_ui_api import settings  # noqa: E402


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
