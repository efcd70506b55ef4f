"""对比 Compare tab: two or more runs side by side, and "train again" with one run's settings.

The runs are picked among the workspace's runs, as the run list names them (a name an API client
types is checked against them, and the folder against the roots). It shows their loss curves in one
plot, a colour per run: the training loss smoothed the way the train tab smooths it, the validation
loss, and a vertical rule where early stopping ended a run. Below it are a table of only the settings
that differ, labelled in the reader's language, and their metrics side by side (from the events, and
from metrics.json when an evaluation wrote one). "Train again" fills the parameters tab with one run's
settings, with the run name cleared so starting makes a new run, and switches to that tab.
lora_studio/compare.py does the reading; nothing here trains or loads a model.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..compare import (BASE, SUMMARY, TUNED, ComparedRun, chosen_runs, metrics_table, settings_diff,
                       train_again_config)
from ..config import fields_by_name
from ..errors import JobError
from ..events import Evaluation, Progress
from ..i18n import CATALOGUE, msg
from ..settings import widget_text
from .form import FieldName
from .i18n import clock, language_of, say
from .state import Studio
from .tab_train import CURVE, LOSS, STEP, early_stop_rule, smoothed

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
PARAMS_TAB = "params"


def shade(color: str, towards: int, amount: float) -> str:
    """`color` moved `amount` of the way to grey level `towards` (255: a tint, 0: a shade)."""
    channels = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (towards - c) * amount):02x}" for c in channels)


def curves_frame(runs: list[ComparedRun], lang: str):
    """(frame, colour map) of every run's smoothed training loss, validation loss and early-stop rule.

    Only drawn curves are named: a new colour map makes the plot take the new set of curves.
    """
    import pandas as pd

    rows, colors, rules = [], {}, []
    for index, run in enumerate(runs):
        color = PALETTE[index % len(PALETTE)]
        steps = [e for e in run.events if isinstance(e, Progress) and e.loss is not None]
        evaluations = [e for e in run.events if isinstance(e, Evaluation)]
        for name, points, shown in (("compare.curve_train", [(e.step, v) for e, v in
                                     zip(steps, smoothed([e.loss for e in steps]))], color),
                                    ("compare.curve_validation", [(e.step, e.eval_loss) for e in evaluations],
                                     shade(color, 255, 0.5))):
            curve = say(name, lang, run=run.name)
            rows += [{STEP: step, LOSS: loss, CURVE: curve} for step, loss in points]
            if points:
                colors[curve] = shown
        rules.append((run, say("compare.curve_stop", lang, run=run.name), shade(color, 0, 0.45)))
    losses = [row[LOSS] for row in rows]
    for run, curve, shown in rules:  # as tall as every curve drawn
        rule = early_stop_rule(list(run.events), losses, curve)
        rows += rule
        if rule:
            colors[curve] = shown
    return pd.DataFrame(rows, columns=[STEP, LOSS, CURVE]), colors


def value_text(name: str, value, lang: str) -> str:
    """A setting's value as a table cell: lists on one line, a run without settings said so."""
    if value is None:
        return say("compare.no_config_shown", lang)
    shown = widget_text(fields_by_name()[name], value)
    return ", ".join(str(shown).splitlines()) if isinstance(shown, str) else str(shown)


def settings_frame(runs: list[ComparedRun], lang: str):
    import pandas as pd

    columns = [say("compare.col_setting", lang), *(run.name for run in runs)]
    rows = [[FieldName(name).render(lang), *(value_text(name, v, lang) for v in values)]
            for name, values in settings_diff([run.config for run in runs])]
    if not rows:
        rows = [[say("compare.same_settings", lang), *("" for _ in runs)]]
    return pd.DataFrame(rows, columns=columns)


def metric_text(name: str, value, lang: str) -> str:
    if value is None:
        return "—"
    if name == "status":
        return say(f"status.{value}", lang)
    if name == "steps":
        return say("compare.steps_of", lang, step=value[0], total=value[1] or "?")
    if name == "train_time":
        return clock(value)
    if name == "tokens_per_second":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4f}" if name in SUMMARY else f"{value:.4g}"
    return str(value)


def metric_label(name: str, lang: str) -> str:
    """A row's name: ours from the catalogue, an evaluation's by its own name (evaluation.metric_<name>)."""
    if name in SUMMARY or name == TUNED:
        return say(f"compare.metric_{name}", lang)
    model, _, metric = name.partition(".")
    if model in (BASE, TUNED) and metric:
        key = f"evaluation.metric_{metric}"
        return say(f"compare.metric_of_{model}", lang, metric=say(key, lang) if key in CATALOGUE else metric)
    return name


def metrics_frame(runs: list[ComparedRun], lang: str):
    import pandas as pd

    columns = [say("compare.col_metric", lang), *(run.name for run in runs)]
    rows = [[metric_label(name, lang), *(metric_text(name, value, lang) for value in values)]
            for name, values in metrics_table(runs)]
    return pd.DataFrame(rows, columns=columns)


def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        # any name may be sent (an API client has no list): the handler takes only runs of the workspace
        ui.runs = gr.Dropdown([], multiselect=True, allow_custom_value=True, label=labels("compare.runs"),
                              info=labels("compare.runs_info"), scale=5, elem_id="compare-runs")
        ui.refresh = gr.Button(labels("compare.refresh"), size="sm", scale=1, elem_id="compare-refresh")
    ui.notice = gr.Markdown(labels("compare.pick_two"), elem_id="compare-notice")
    ui.plot = gr.LinePlot(x=STEP, y=LOSS, color=CURVE, label=labels("compare.curves"), visible=False,
                          elem_id="compare-plot")
    ui.settings = gr.Dataframe(label=labels("compare.settings"), interactive=False, elem_id="compare-settings")
    ui.metrics = gr.Dataframe(label=labels("compare.metrics"), interactive=False, max_height=900,
                              elem_id="compare-metrics")
    with gr.Row():
        ui.again_run = gr.Dropdown([], allow_custom_value=True, label=labels("compare.again_run"),
                                   info=labels("compare.again_info"), scale=3, elem_id="compare-again-run")
        ui.again = gr.Button(labels("compare.again"), variant="primary", scale=1, elem_id="compare-again")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, context) -> None:
    """context: form (SettingsForm), tabs (name -> gr.Tab), demo; see ui/app.py."""
    form, guarded = context.form, studio.guarded
    tabs = context.tabs[PARAMS_TAB].parent  # the gr.Tabs holding every tab: selecting one switches to it
    private = {"api_visibility": "private"}

    def workspace_runs(names) -> list[ComparedRun]:
        """The runs named, each a run of the workspace (its folder inside the roots), read."""
        names = [str(name).strip() for name in (names or []) if str(name).strip()]
        runs = chosen_runs(names, studio.scan_runs())
        for run in runs:  # a run folder may be a link
            studio.roots.check(run.path, JobError, shown=run.name)
        return runs

    def on_refresh_click(chosen):
        known = [run.name for run in studio.scan_runs()]
        return gr.update(choices=known, value=[name for name in (chosen or []) if name in known])

    @guarded
    def on_runs_change(chosen, request: gr.Request):
        lang = language_of(request, studio.lang)
        compared = workspace_runs(chosen)
        names = [run.name for run in compared]
        again = gr.update(choices=names, value=names[0] if names else None)
        if len(names) < 2:
            return (say("compare.picked_too_few", lang, count=len(names)), gr.update(visible=False),
                    None, None, again)
        frame, colors = curves_frame(compared, lang)
        plot = gr.LinePlot(frame, visible=bool(colors), color_map=colors, x_title=say("ui.plot_step", lang),
                           y_title=say("ui.plot_loss", lang), color_title=say("ui.plot_curve", lang))
        notice = say("compare.compared", lang, count=len(names), names=", ".join(names))
        return notice, plot, settings_frame(compared, lang), metrics_frame(compared, lang), again

    @guarded
    def on_again_click(run, request: gr.Request):
        """The chosen run's settings into every settings widget (run name cleared), then the params tab."""
        name = str(run or "").strip()
        if not name:
            raise JobError(msg("compare.no_run_chosen"), msg("compare.where"), msg("compare.no_run_chosen_fix"))
        config = train_again_config(workspace_runs([name])[0])
        gr.Info(say("compare.again_done", language_of(request, studio.lang), run=name))
        return [*form.to_values(config), gr.Tabs(selected=PARAMS_TAB)]

    shown = [ui.notice, ui.plot, ui.settings, ui.metrics, ui.again_run]
    # read again on a pick and on a refresh (a run still training has drawn more since)
    for event in (ui.refresh.click, context.tabs["compare"].select):
        event(on_refresh_click, ui.runs, ui.runs, **private).then(on_runs_change, ui.runs, shown, **private)
    ui.runs.input(on_runs_change, ui.runs, shown, show_progress="hidden", **private)
    ui.again.click(on_again_click, ui.again_run, [*form.inputs(), tabs], **private)
    context.demo.load(on_refresh_click, ui.runs, ui.runs, **private)
    ui.on_refresh_click, ui.on_runs_change, ui.on_again_click = on_refresh_click, on_runs_change, on_again_click
