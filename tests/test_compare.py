"""Run comparison: the settings that differ, curves, metrics side by side, and "train again" into the form.

The runs are folders written the way a TrainingJob writes them (config.yaml, events.jsonl through an
EventLog, metrics.json as an evaluation leaves it), so no model is trained here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")

from lora_studio.compare import (SUMMARY, chosen_runs, compared_run, metrics_table, read_metrics,  # noqa: E402
                                 settings_diff, train_again_config)
from lora_studio.config import RunConfig, Setting, fields_by_name, save_yaml  # noqa: E402
from lora_studio.events import EarlyStopped, Evaluation, EventLog, Finished, Progress  # noqa: E402
from lora_studio.i18n import CATALOGUE, text  # noqa: E402
from lora_studio.runs import list_runs, read_run  # noqa: E402

LOSSES = {"lr-high": [2.0, 1.5, 1.4, 1.6], "lr-low": [2.2, 2.0, 1.8, 1.7], "plain": [2.1, 1.9]}


def write_run(ws, name: str, config: RunConfig, losses: list[float], evaluations=(), stop=None,
              metrics=None, elapsed=2.0):
    """A finished run folder: its settings, a Progress per logged loss, evaluations and an end."""
    folder = ws.runs / name
    folder.mkdir(parents=True)
    save_yaml(config.replace(run_name=name), folder / "config.yaml")
    log = EventLog(folder / "events.jsonl")
    for index, loss in enumerate(losses, 1):
        log.emit(Progress(step=5 * index, total_steps=40, epoch=0.1 * index, loss=loss, tokens_per_second=800.0 + index,
                          elapsed=elapsed * index))
    for step, loss in evaluations:
        log.emit(Evaluation(step=step, eval_loss=loss))
    if stop is not None:
        log.emit(EarlyStopped(step=stop[0], best_step=stop[1], best_eval_loss=stop[2]))
    log.emit(Finished(status="completed", step=5 * len(losses), loss=losses[-1]))
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics, encoding="utf-8")
    return folder


@pytest.fixture
def three_runs(ws):
    """Three runs whose settings differ in a number, a list, a mapping and the probe list."""
    base = RunConfig(model_name_or_path="demo-tiny", data_files=["/data/a.json"])
    configs = {"lr-high": base.replace(learning_rate=3e-3, target_modules=["q_proj", "v_proj"]),
               "lr-low": base.replace(chat_template_kwargs={"enable_thinking": False}),
               "plain": base.replace(probe_prompts=["你是谁？"])}
    # an evaluation's metrics.json (evaluation.py): each model by name, base first, the final weights last
    evaluated = {"run": "lr-high", "updated": 1.0, "validation": {"examples": 6, "answered": 6}, "checkpoints": {
        "base": {"step": 0, "perplexity": 30.5, "chrf": 10.0, "best": [{"prompt": "q", "answer": "a"}]},
        "checkpoint-10": {"step": 10, "perplexity": 14.0, "chrf": 30.0},
        "checkpoint-20": {"step": 20, "perplexity": 12.25, "chrf": 41.5, "in_character": 0.8, "ok": True}}}
    write_run(ws, "lr-high", configs["lr-high"], LOSSES["lr-high"], [(10, 1.7), (20, 1.9)],
              stop=(20, 10, 1.7), metrics=json.dumps(evaluated))
    write_run(ws, "lr-low", configs["lr-low"], LOSSES["lr-low"], [(10, 1.95), (20, 1.8)],
              metrics='{"checkpoints": {"base": {"perplexity": 30.5')  # half-written: no metrics, no error
    write_run(ws, "plain", configs["plain"], LOSSES["plain"], elapsed=3.0,
              metrics=json.dumps({"custom": {"score": 3, "note": "by hand", "samples": [1, 2]}}))
    return configs


def test_the_diff_lists_exactly_the_settings_that_differ_in_field_order():
    base = RunConfig()
    a = base.replace(learning_rate=3e-4, target_modules=["q_proj", "v_proj"], run_name="a")
    b = base.replace(chat_template_kwargs={"enable_thinking": False}, run_name="b")
    c = base.replace(probe_prompts=["你是谁？", "Who are you?"], data_files=["x.json", "y.json"], run_name="c")
    rows = settings_diff([a, b, c])
    assert [name for name, _ in rows] == [Setting.data_files, Setting.chat_template_kwargs, Setting.target_modules,
                                          Setting.learning_rate, Setting.probe_prompts]  # no run_name
    values = dict(rows)
    assert values[Setting.learning_rate] == (3e-4, base.learning_rate, base.learning_rate)
    assert values[Setting.target_modules] == (["q_proj", "v_proj"], "all-linear", "all-linear")
    assert values[Setting.chat_template_kwargs] == ({}, {"enable_thinking": False}, {})
    assert values[Setting.data_files][2] == ["x.json", "y.json"]
    assert settings_diff([a, a.replace(run_name="other")]) == []  # a name alone is no difference
    # a run without readable settings shows None and is no difference by itself
    assert settings_diff([a, None, a]) == []
    assert dict(settings_diff([a, None, b]))[Setting.learning_rate] == (3e-4, None, base.learning_rate)


def test_the_settings_table_names_settings_in_the_readers_language(three_runs, ws):
    from lora_studio.ui.tab_compare import settings_frame

    runs = chosen_runs(["lr-high", "lr-low", "plain"], list_runs(ws))
    zh = settings_frame(runs, "zh")
    assert list(zh.columns) == ["设置", "lr-high", "lr-low", "plain"]
    rows = {row[0]: list(row[1:]) for row in zh.itertuples(index=False)}
    assert set(rows) == {"模板开关（chat_template_kwargs）", "目标模块（target_modules）", "学习率（learning_rate）",
                         "探针问题（probe_prompts）"}
    assert rows["目标模块（target_modules）"] == ["q_proj, v_proj", "all-linear", "all-linear"]
    assert rows["模板开关（chat_template_kwargs）"] == ["", "{enable_thinking: false}", ""]
    assert rows["探针问题（probe_prompts）"][2] == "你是谁？"
    assert rows["学习率（learning_rate）"][:2] == ["0.003", "0.0001"]
    en = settings_frame(runs[1:2] * 2, "en")  # the same run twice: nothing differs
    assert en.iloc[0, 0] == "(these runs have the same settings)"


def test_the_loss_curves_hold_every_runs_points_in_its_own_colour(three_runs, ws):
    from lora_studio.ui.tab_compare import curves_frame
    from lora_studio.ui.tab_train import RULE_WIDTH, smoothed

    runs = chosen_runs(["lr-high", "lr-low", "plain"], list_runs(ws))
    frame, colors = curves_frame(runs, "en")
    for name, losses in LOSSES.items():
        train = frame[frame.curve == f"{name} · training (smoothed)"]
        assert train.step.tolist() == [5 * i for i in range(1, len(losses) + 1)]
        assert train.loss.tolist() == smoothed(losses)  # the train tab's smoothing
        assert train.loss.tolist()[0] == losses[0]
    assert frame[frame.curve == "lr-low · validation"].loss.tolist() == [1.95, 1.8]
    assert "plain · validation" not in set(frame.curve)  # no split: no curve, no legend entry
    rule = frame[frame.curve == "lr-high · early stop"]
    assert rule.step.tolist() == [20, 20 + RULE_WIDTH]
    assert rule.loss.tolist() == [frame.loss.min(), frame.loss.max()]  # as tall as every curve
    assert set(colors) == set(frame.curve)
    trains = [colors[f"{name} · training (smoothed)"] for name in LOSSES]
    assert len(set(trains)) == 3 and colors["lr-high · validation"] not in trains


def test_metrics_stand_side_by_side(three_runs, ws):
    from lora_studio.ui.tab_compare import metrics_frame

    runs = chosen_runs(["lr-high", "lr-low", "plain"], list_runs(ws))
    table = dict(metrics_table(runs))
    assert table["final_loss"] == (1.6, 1.7, 1.9)
    assert table["best_eval_loss"] == (1.7, 1.8, None) and table["best_step"] == (10, 20, None)
    assert table["steps"] == ((20, 40), (20, 40), (10, 40))
    assert table["early_stop"] == (20, None, None)
    assert table["tokens_per_second"] == (804.0, 804.0, 802.0)
    assert table["train_time"] == (8.0, 8.0, 6.0)
    # an evaluation's numbers: the base model's and the last evaluated adapter's; the half-written file
    # gives nothing; any other mapping is flattened as it is
    assert table["tuned"] == ("checkpoint-20", None, None)
    assert table["base.perplexity"] == (30.5, None, None) and table["tuned.perplexity"] == (12.25, None, None)
    assert table["tuned.in_character"] == (0.8, None, None) and table["base.chrf"] == (10.0, None, None)
    assert table["custom.score"] == (None, None, 3) and table["custom.note"] == (None, None, "by hand")
    assert [key for key in table if key not in SUMMARY] == [  # no steps, samples, flags or time stamps
        "base.perplexity", "base.chrf", "tuned", "tuned.perplexity", "tuned.chrf", "tuned.in_character",
        "custom.score", "custom.note"]
    frame = metrics_frame(runs, "zh")
    rows = {row[0]: list(row[1:]) for row in frame.itertuples(index=False)}
    assert rows["最低验证损失"] == ["1.7000", "1.8000", "—"]
    assert rows["状态"] == ["已完成"] * 3 and rows["训练用时"] == ["0:08", "0:08", "0:06"]
    assert rows["早停于第几步"] == ["20", "—", "—"] and rows["步数"] == ["20/40", "20/40", "10/40"]
    perplexity = text("evaluation.metric_perplexity", "zh") if "evaluation.metric_perplexity" in CATALOGUE \
        else "perplexity"  # the evaluation's own name for it
    assert rows[f"微调后 · {perplexity}"] == ["12.25", "—", "—"] and rows[f"基础模型 · {perplexity}"][0] == "30.5"
    assert rows["评估的适配器"] == ["checkpoint-20", "—", "—"] and rows["custom.score"] == ["—", "—", "3"]


def test_the_metrics_shown_are_those_of_the_adapter_the_run_delivers(three_runs, ws):
    folder = ws.runs / "lr-high"
    assert read_metrics(folder)["tuned"] == "checkpoint-20"  # nothing preferred: the last one evaluated
    assert read_metrics(folder, ["adapter", "checkpoint-10"])["tuned"] == "checkpoint-10"
    assert read_metrics(folder, ["checkpoint-10"])["tuned.perplexity"] == 14.0
    assert compared_run(read_run(folder)).metrics["tuned"] == "checkpoint-20"
    # early stopping leaves the lowest validation loss's weights in adapter/: that checkpoint's numbers
    save_yaml(read_run(folder).config.replace(early_stopping_patience=1), folder / "config.yaml")
    assert compared_run(read_run(folder)).metrics["tuned"] == "checkpoint-10"


def test_odd_metrics_files_are_read_as_no_metrics(tmp_path):
    for content in (b"\xff\xfe not utf-8", b"[1, 2]", b"", b'{"checkpoints": [1]}', b'{"checkpoints": {"base": 3}}'):
        (tmp_path / "metrics.json").write_bytes(content)
        assert read_metrics(tmp_path) == {}
    (tmp_path / "metrics.json").write_bytes(b'{"a": NaN, "b": {"c": 1, "d": Infinity}}')
    assert read_metrics(tmp_path) == {"b.c": 1}
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "metrics.json").mkdir()
    assert read_metrics(tmp_path) == {}


def test_a_resumed_run_counts_the_time_of_each_session(ws):
    folder = write_run(ws, "resumed", RunConfig(), [2.0, 1.8], elapsed=4.0)
    log = EventLog(folder / "events.jsonl")
    log.emit(Progress(step=15, total_steps=40, epoch=0.3, loss=1.7, elapsed=1.0))  # a new session's clock
    assert dict(metrics_table([compared_run(read_run(folder))]))["train_time"] == (9.0,)


def compare_tab(ws):
    """The compare tab wired to a form with every setting, inside tabs, as the studio wires it."""
    import gradio as gr

    from lora_studio.ui import tab_compare
    from lora_studio.ui.form import SettingsForm
    from lora_studio.ui.i18n import Labels
    from lora_studio.ui.state import Studio

    studio, labels = Studio(ws), Labels("en")
    form = SettingsForm(labels)
    with gr.Blocks() as demo:
        with gr.Tabs():
            tabs = {name: gr.Tab(name, id=name) for name in ("params", "compare")}
            with tabs["params"]:
                form.render(list(fields_by_name()))
            with tabs["compare"]:
                ui = tab_compare.build(studio, labels)
        tab_compare.wire(studio, ui, SimpleNamespace(form=form, tabs=tabs, demo=demo))
    return ui, form


def test_train_again_fills_every_setting_with_the_runs_values_and_opens_the_params_tab(three_runs, ws):
    import gradio as gr

    from lora_studio.settings import widget_text

    ui, form = compare_tab(ws)
    *values, tab = ui.on_again_click("lr-high", None)
    assert tab.selected == "params"
    filled = dict(zip(form.names(), values))
    assert set(filled) == set(fields_by_name())
    saved = read_run(ws.runs / "lr-high").config
    specs = fields_by_name()
    for name in specs:
        expected = "" if name == Setting.run_name else widget_text(specs[name], getattr(saved, name))
        assert filled[name] == expected, name
    assert filled[Setting.learning_rate] == 3e-3 and filled[Setting.target_modules] == "q_proj, v_proj"
    assert form.to_config(filled) == train_again_config(compared_run(read_run(ws.runs / "lr-high")))
    with pytest.raises(gr.Error, match="no such runs in the workspace: ../lr-high"):
        ui.on_again_click("../lr-high", None)
    with pytest.raises(gr.Error, match="no run is chosen"):
        ui.on_again_click("", None)


def test_the_tab_compares_only_two_or_more_runs_of_the_workspace(three_runs, ws):
    import gradio as gr

    ui, _form = compare_tab(ws)
    assert set(ui.on_refresh_click(["plain", "gone"])["choices"]) == {"lr-high", "lr-low", "plain"}
    notice, plot, settings, metrics, again = ui.on_runs_change(["plain"], None)
    assert notice == "Runs chosen: 1. Pick at least two to compare." and settings is None
    notice, plot, settings, metrics, again = ui.on_runs_change(["lr-high", "plain"], None)
    assert notice == "Comparing 2 runs: lr-high, plain." and plot.visible and again["choices"] == ["lr-high", "plain"]
    assert list(settings.columns) == ["Setting", "lr-high", "plain"] and len(metrics) > 8
    with pytest.raises(gr.Error):
        ui.on_runs_change(["lr-high", "/etc"], None)
