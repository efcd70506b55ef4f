"""训练 Train tab: start, stop and resume the studio's one training job, and watch it.

A `gr.Timer` polls the job once a second. The job lives in the studio's JobSlot, not in the page, so
training goes on when the page is closed; a reloaded page rebuilds everything from the job's events
(or, after a restart of the studio, from the newest run's events.jsonl). Each tick scans the runs
once and hands that list to everything it shows.

A run to resume is named as the run list shows it (any API client may type one); only a folder of
the workspace's runs/ is taken. With --auth, a job is stopped or a run resumed only by the user who
started it (access.py); the model tab's consent checkbox reaches the job as trust_remote_code.
"""

from __future__ import annotations

import html
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import gradio as gr

from ..config import load_yaml
from ..errors import JobError
from ..events import EarlyStopped, Evaluation, Failed, Finished, Log, Progress, TrackerLink
from ..i18n import LANGUAGES, msg, text
from ..runs import RunInfo, adapter_dirs, latest_checkpoint
from .i18n import clock, language_of, say
from .paths import run_folder
from . import train_launch
from . import monitor_panel
from .state import Studio
from .tab_model import TRUST

LOG_LINES = 14
SMOOTHING = 0.6  # TensorBoard's default: a debiased exponential moving average
STEP, LOSS, CURVE = "step", "loss", "curve"  # the plot's columns; its titles are worded per reader
# the legend's entries: catalogue key -> colour
CURVES = MappingProxyType({"ui.curve_raw": "#9ecae1", "ui.curve_smoothed": "#d6604d",
                           "ui.curve_validation": "#2ca25f"})
STOP_CURVE, STOP_COLOR = "training.curve_early_stop", "#404040"
# gr.LinePlot sums the losses of points that share a step in one curve: the two ends of the early-stop
# rule sit this far apart on the step axis, which draws as a vertical line
RULE_WIDTH = 1e-3
RESUMABLE = ("stopped", "interrupted", "failed")
RUN_COLUMNS = ("ui.col_run", "ui.col_status", "ui.col_step", "ui.col_loss", "ui.col_model", "ui.col_adapters")


def current(studio: Studio, runs: list[RunInfo]) -> tuple[Path | None, list, str]:
    """(run folder, events, state) of the live job, else of the newest run on disk."""
    job = studio.training.job
    if job is not None and job.run_dir is not None:
        return job.run_dir, job.events.all(), job.state
    if not runs:
        return None, [], ""
    return runs[0].path, studio.run_events(runs[0].path), runs[0].status


def loss_points(events: list) -> int:
    """What the plot draws, counted: it is redrawn when this changes (an early stop adds its rule)."""
    return sum(isinstance(e, (Evaluation, EarlyStopped)) or (isinstance(e, Progress) and e.loss is not None)
               for e in events)


def loss_frame(events: list, lang: str):
    """Raw and smoothed training loss, and the validation loss (when the run holds out a split).

    Every frame names all three curves, with an empty point for a curve that has none yet: the plot
    keeps the colours of the first frame it drew for as long as the page lives.
    """
    import pandas as pd

    raw, smooth, validation = (text(key, lang) for key in CURVES)
    steps = [e for e in events if isinstance(e, Progress) and e.loss is not None]
    rows = []
    for event, average in zip(steps, smoothed([e.loss for e in steps])):
        rows.append({STEP: event.step, LOSS: event.loss, CURVE: raw})
        rows.append({STEP: event.step, LOSS: average, CURVE: smooth})
    rows += [{STEP: e.step, LOSS: e.eval_loss, CURVE: validation} for e in events if isinstance(e, Evaluation)]
    drawn = {row[CURVE] for row in rows}
    rows += [{STEP: rows[0][STEP] if rows else 0, LOSS: None, CURVE: curve}
             for curve in (raw, smooth, validation) if curve not in drawn]
    rows += early_stop_rule(events, [row[LOSS] for row in rows], text(STOP_CURVE, lang))
    return pd.DataFrame(rows, columns=[STEP, LOSS, CURVE])


def smoothed(losses: list[float]) -> list[float]:
    """TensorBoard's smoothing of a loss curve: a debiased exponential moving average."""
    values, average, weight = [], 0.0, 1.0
    for loss in losses:
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        weight *= SMOOTHING  # dividing by 1 - weight removes the pull towards the zero start
        values.append(round(average / (1 - weight), 5))
    return values


def early_stop_rule(events: list, losses: list, curve: str) -> list[dict]:
    """Two points of `curve`: a vertical line at the step early stopping ended the run, as tall as the
    plotted losses; none when it did not stop early."""
    stop = next((e for e in reversed(events) if isinstance(e, EarlyStopped)), None)
    drawn = [loss for loss in losses if loss is not None]
    if stop is None or not drawn:
        return []
    return [{STEP: stop.step, LOSS: min(drawn), CURVE: curve},
            {STEP: stop.step + RULE_WIDTH, LOSS: max(drawn), CURVE: curve}]


def curve_colors(early_stop: bool = False) -> dict[str, str]:
    """The legend's colours; with the early-stop rule's when it is drawn. A plot takes the curves of its
    first frame for good unless its colour map changes, so the rule's curve is named only when drawn."""
    colors = {**CURVES, STOP_CURVE: STOP_COLOR} if early_stop else CURVES
    return {text(key, lang): color for key, color in colors.items() for lang in LANGUAGES}


def status_html(run_dir: Path | None, events: list, state: str, lang: str) -> str:
    if run_dir is None:
        return f"<div id='train-status-text'>{say('ui.no_run', lang)}</div>"
    progress = next((e for e in reversed(events) if isinstance(e, Progress)), None)
    end = next((e for e in reversed(events) if isinstance(e, (Finished, Failed))), None)
    step, total = (progress.step, progress.total_steps) if progress else (0, 0)
    percent = 100 * step / total if total else 0
    facts = [f"<b>{html.escape(run_dir.name)}</b>",
             say("ui.fact_state", lang, state=f"<b class='run-state'>{say(f'status.{state}', lang)}</b>"),
             say("ui.fact_step", lang, step=step, total=total or "?")]
    if progress:
        facts.append(say("ui.fact_epoch", lang, epoch=progress.epoch))
        if progress.loss is not None:
            facts.append(say("ui.fact_loss", lang, loss=progress.loss))
        if progress.learning_rate is not None:
            facts.append(say("ui.fact_lr", lang, lr=progress.learning_rate))
        if progress.tokens_per_second:
            facts.append(say("ui.fact_tps", lang, tps=progress.tokens_per_second))
        facts.append(say("ui.fact_elapsed", lang, time=clock(progress.elapsed)))
        if progress.eta is not None and state in ("running", "stopping"):
            facts.append(say("ui.eta_in", lang, time=clock(progress.eta)))
    stop = next((e for e in reversed(events) if isinstance(e, EarlyStopped)), None)
    if stop is not None:  # a completed run that ended short of its steps: say why
        facts.append(say("training.fact_early_stopped", lang, step=stop.step, best_step=stop.best_step))
    message = ""
    if isinstance(end, Failed):
        message = f"<div class='studio-error'>{html.escape(end.text.render(lang))}</div>"
    elif isinstance(end, Finished):
        message = f"<div>{say('ui.adapter_at', lang, path=f'<code>{html.escape(end.output)}</code>')}</div>"
    message += tracker_line(next((e for e in reversed(events) if isinstance(e, TrackerLink)), None), lang)
    return (f"<div class='studio-progress'><progress max='100' value='{percent:.1f}'></progress> "
            f"{percent:.0f}%</div><div id='train-status-text'>{' · '.join(facts)}</div>{message}")


def tracker_line(link: TrackerLink | None, lang: str) -> str:
    """Where the run's experiment tracker shows it: a link to a web page, or the folder and command."""
    if link is None:
        return ""
    words = html.escape(link.text.render(lang))
    if link.url.startswith(("https://", "http://")):  # only a web address becomes a link
        words = f"<a href='{html.escape(link.url, quote=True)}' target='_blank' rel='noopener'>{words}</a>"
    return f"<div id='train-tracker-link'>{words}</div>"


def log_tail(events: list, lang: str) -> str:
    lines = []
    for event in events:
        if isinstance(event, Log):
            line = event.text.render(lang)
            lines.append(line if event.level == "info" else say(f"ui.log_{event.level}", lang, text=line))
        elif isinstance(event, Failed):
            lines.append(say("ui.log_failed", lang, text=event.text.render(lang)))
        elif isinstance(event, Finished):
            lines.append(say("ui.log_finished", lang, status=msg(f"status.{event.status}"), step=event.step,
                             output=event.output))
    return "\n".join(lines[-LOG_LINES:])


def runs_table(runs: list[RunInfo], lang: str):
    import pandas as pd

    rows = [[r.name, say(f"status.{r.status}", lang), f"{r.step}/{r.total_steps}",
             "" if r.loss is None else f"{r.loss:.4f}", r.model, len(adapter_dirs(r.path))] for r in runs]
    return pd.DataFrame(rows, columns=[say(key, lang) for key in RUN_COLUMNS])


def resumable(runs: list[RunInfo]) -> list[str]:
    return [r.name for r in runs if r.status in RESUMABLE and latest_checkpoint(r.path) is not None]


def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        ui.start = gr.Button(labels("ui.train_start"), variant="primary", elem_id="train-start")
        ui.stop = gr.Button(labels("ui.train_stop"), variant="stop", elem_id="train-stop")
        # any name may be sent (an API client has no list): the handler takes only a run of the workspace
        ui.resume_run = gr.Dropdown([], label=labels("ui.train_run"), allow_custom_value=True, scale=2)
        ui.resume = gr.Button(labels("ui.train_resume"), elem_id="train-resume")
    ui.notice = gr.Markdown(elem_id="train-notice")
    ui.status = gr.HTML(label=labels("ui.train_status"), elem_id="train-status")
    with gr.Row():
        with gr.Column(scale=3):
            # hidden until the first loss point: an empty plot would draw a `null` axis
            ui.hint = gr.Markdown(labels("ui.loss_hint"), elem_id="loss-hint")
            # no fixed height: with one, Gradio clips the legend off the bottom
            ui.plot = gr.LinePlot(x=STEP, y=LOSS, color=CURVE, label=labels("ui.train_loss"), elem_id="loss-plot",
                                  color_map=curve_colors(), visible=False)
        ui.log = gr.Textbox(label=labels("ui.train_log"), lines=LOG_LINES, max_lines=LOG_LINES, interactive=False,
                            autoscroll=True, elem_id="train-log", scale=2)
    ui.runs = gr.Dataframe(label=labels("ui.train_history"), interactive=False, elem_id="runs-table")
    ui.launch = train_launch.build(labels)
    ui.monitor = monitor_panel.build(studio, labels)  # GPU, RAM, tokens/s
    ui.cursor = gr.State(None)
    ui.timer = gr.Timer(1.0)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form, trust) -> None:
    """`trust` is the model tab's consent checkbox, for the job's model and tokenizer."""
    outputs = [ui.status, ui.hint, ui.plot, ui.log, ui.runs, ui.resume_run, ui.cursor]
    guarded = studio.guarded

    def plot_update(events: list, lang: str):
        if not loss_points(events):
            return gr.update(visible=True), gr.update(visible=False)
        stopped = any(isinstance(e, EarlyStopped) for e in events)
        return gr.update(visible=False), gr.LinePlot(
            loss_frame(events, lang), visible=True, x_title=say("ui.plot_step", lang),
            y_title=say("ui.plot_loss", lang), color_title=say("ui.plot_curve", lang),
            color_map=curve_colors(stopped))

    def on_timer_tick(cursor, request: gr.Request):
        runs = studio.scan_runs()
        run_dir, events, state = current(studio, runs)
        lang = language_of(request, studio.lang)
        mark = (str(run_dir), len(events), state, loss_points(events), lang)
        if mark == tuple(cursor or ()):
            return [gr.update()] * (len(outputs) - 1) + [cursor]
        # the plot is redrawn only when a loss point is added, not on every step
        same_plot = cursor is not None and tuple(cursor)[0] == mark[0] and tuple(cursor)[3:] == mark[3:]
        hint, plot = (gr.update(), gr.update()) if same_plot else plot_update(events, lang)
        return (status_html(run_dir, events, state, lang), hint, plot, log_tail(events, lang),
                runs_table(runs, lang), gr.update(choices=resumable(runs)), mark)

    @guarded
    def on_start_click(request: gr.Request, **settings):
        trusted = settings.pop(TRUST, False) is True
        config = studio.checked(form.to_config(settings))
        # in this process, or under a launcher (train_launch.py); several nodes: their commands, nothing started
        return train_launch.start_or_prepare(studio, config, trusted, request)

    @guarded
    def on_stop_click(request: gr.Request):
        job = studio.training.job
        if job is None or not job.is_active:
            raise JobError(msg("ui.nothing_to_stop"), msg("ui.where_training"))
        studio.control(job, request, job.describe(), "stop")
        job.stop()
        return say("ui.stopping", language_of(request, studio.lang))

    @guarded
    def on_resume_click(run, request: gr.Request, **consent):
        if not str(run or "").strip():
            raise JobError(msg("ui.no_run_chosen"), msg("ui.where_training"), msg("ui.no_run_chosen_fix"))
        folder = run_folder(studio.roots, studio.workspace, str(run), resumable(studio.scan_runs()))
        studio.control(folder, request, folder.name, "resume")
        if (folder / "config.yaml").is_file():  # a run trained from the CLI may name files outside the roots
            studio.checked(load_yaml(folder / "config.yaml"))
        trusted = consent.get(TRUST) is True
        job = studio.start(studio.training, lambda: train_launch.resume_job(studio, folder, trusted), request)
        return say("ui.resumed", language_of(request, studio.lang), run=job.run_dir.name)

    def on_progress_poll() -> dict:
        """The job's state for API clients: what the page's status line shows, as data."""
        run_dir, events, state = current(studio, studio.scan_runs())
        progress = next((e for e in reversed(events) if isinstance(e, Progress)), None)
        end = next((e for e in reversed(events) if isinstance(e, (Finished, Failed))), None)
        return {"run_dir": str(run_dir) if run_dir else None, "state": state,
                "step": progress.step if progress else 0, "total_steps": progress.total_steps if progress else 0,
                "loss": progress.loss if progress else None,
                "losses": [e.loss for e in events if isinstance(e, Progress) and e.loss is not None],
                "message": end.message if isinstance(end, Failed) else getattr(end, "output", "")}

    poll = dict(fn=on_timer_tick, inputs=ui.cursor, outputs=outputs, show_progress="hidden",
                api_visibility="private")
    ui.timer.tick(**poll)
    # the poll follows even a refused start: it shows the state the refusal left (it never fails itself)
    ui.start.click(on_start_click, None, ui.notice, inputs_kwargs={**form.widgets_by_name(), TRUST: trust},
                   api_name="start_training").then(**poll)
    ui.stop.click(on_stop_click, None, ui.notice, api_name="stop_training").then(**poll)
    ui.resume.click(on_resume_click, ui.resume_run, ui.notice, inputs_kwargs={TRUST: trust},
                    api_name="resume_training").then(**poll)
    gr.api(on_progress_poll, api_name="training_progress")
    train_launch.wire(studio, ui.launch, trust, ui.notice, poll)
    monitor_panel.wire(studio, ui.monitor)
    ui.on_timer_tick = on_timer_tick
    ui.poll_outputs = outputs
