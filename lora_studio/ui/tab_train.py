"""训练 Train tab: start, stop and resume the studio's one training job, and watch it.

A `gr.Timer` polls the job once a second. The job lives in the studio's JobSlot, not in the page, so
training goes on when the page is closed; a reloaded page rebuilds everything from the job's events
(or, after a restart of the studio, from the newest run's events.jsonl).
"""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..errors import JobError
from ..events import Evaluation, Failed, Finished, Log, Progress, read_events
from ..runs import adapter_dirs, latest_checkpoint, list_runs
from .i18n import language_of, say
from .state import Studio, guarded

LOG_LINES = 14
SMOOTHING = 0.6  # TensorBoard's default: a debiased exponential moving average
# the legend's title and entries
CURVE, RAW, SMOOTHED, VALIDATION = "curve 曲线", "raw 原始", "smoothed 平滑", "validation 验证集"


def current(studio: Studio) -> tuple[Path | None, list, str]:
    """(run folder, events, state) of the live job, else of the newest run on disk."""
    job = studio.slot.job
    if job is not None and job.run_dir is not None:
        return job.run_dir, job.events.all(), job.state
    runs = list_runs()
    if not runs:
        return None, [], ""
    return runs[0].path, read_events(runs[0].path / "events.jsonl"), runs[0].status


def loss_frame(events: list):
    """Raw and smoothed training loss, and the validation loss (when the run holds out a split).

    Every frame names all three curves, with an empty point for a curve that has none yet: the plot
    keeps the colours of the first frame it drew for as long as the page lives.
    """
    import pandas as pd

    rows, average, weight = [], 0.0, 1.0
    for event in events:
        if isinstance(event, Progress) and event.loss is not None:
            average = SMOOTHING * average + (1 - SMOOTHING) * event.loss
            weight *= SMOOTHING  # dividing by 1 - weight removes the pull towards the zero start
            rows.append({"step": event.step, "loss": event.loss, CURVE: RAW})
            rows.append({"step": event.step, "loss": round(average / (1 - weight), 5), CURVE: SMOOTHED})
        elif isinstance(event, Evaluation):
            rows.append({"step": event.step, "loss": event.eval_loss, CURVE: VALIDATION})
    drawn = {row[CURVE] for row in rows}
    rows += [{"step": rows[0]["step"] if rows else 0, "loss": None, CURVE: curve}
             for curve in (RAW, SMOOTHED, VALIDATION) if curve not in drawn]
    return pd.DataFrame(rows, columns=["step", "loss", CURVE])


def status_html(run_dir: Path | None, events: list, state: str, lang: str) -> str:
    if run_dir is None:
        return f"<div id='train-status-text'>{say('msg.no_run', lang)}</div>"
    progress = next((e for e in reversed(events) if isinstance(e, Progress)), None)
    end = next((e for e in reversed(events) if isinstance(e, (Finished, Failed))), None)
    step, total = (progress.step, progress.total_steps) if progress else (0, 0)
    percent = 100 * step / total if total else 0
    facts = [f"<b>{html.escape(run_dir.name)}</b>", f"{say('msg.state', lang)}: <b class='run-state'>{state}</b>",
             f"{say('msg.step', lang)} {step}/{total or '?'}"]
    if progress:
        facts.append(f"{say('msg.epoch', lang)} {progress.epoch:.2f}")
        if progress.loss is not None:
            facts.append(f"loss {progress.loss:.4f}")
        if progress.learning_rate is not None:
            facts.append(f"{say('msg.lr', lang)} {progress.learning_rate:.2e}")
        if progress.tokens_per_second:
            facts.append(f"{progress.tokens_per_second:,.0f} {say('msg.tps', lang)}")
        facts.append(f"{say('msg.elapsed', lang)} {_clock(progress.elapsed)}")
        if progress.eta is not None and state in ("running", "stopping"):
            facts.append(f"{say('msg.eta', lang)} {_clock(progress.eta)}")
    message = ""
    if isinstance(end, Failed):
        message = f"<div class='studio-error'>{html.escape(end.message)}</div>"
    elif isinstance(end, Finished):
        message = f"<div>adapter: <code>{html.escape(end.output)}</code></div>"
    return (f"<div class='studio-progress'><progress max='100' value='{percent:.1f}'></progress> "
            f"{percent:.0f}%</div><div id='train-status-text'>{' · '.join(facts)}</div>{message}")


def _clock(seconds: float) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log_tail(events: list) -> str:
    lines = []
    for event in events:
        if isinstance(event, Log):
            lines.append(event.message if event.level == "info" else f"[{event.level}] {event.message}")
        elif isinstance(event, Failed):
            lines.append(f"[failed] {event.message}")
        elif isinstance(event, Finished):
            lines.append(f"[{event.status}] step {event.step}, adapter {event.output}")
    return "\n".join(lines[-LOG_LINES:])


def runs_table(active: Path | None) -> list[list]:
    return [[r.name, r.status, f"{r.step}/{r.total_steps}", "" if r.loss is None else f"{r.loss:.4f}", r.model,
             len(adapter_dirs(r.path))] for r in list_runs(active=active)]


def resumable(active: Path | None) -> list[str]:
    return [r.name for r in list_runs(active=active)
            if r.status in ("stopped", "interrupted", "failed") and latest_checkpoint(r.path) is not None]


def build(studio: Studio, i18n) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        ui.start = gr.Button(i18n("train.start"), variant="primary", elem_id="train-start")
        ui.stop = gr.Button(i18n("train.stop"), variant="stop", elem_id="train-stop")
        ui.resume_run = gr.Dropdown([], label=i18n("train.run"), allow_custom_value=False, scale=2)
        ui.resume = gr.Button(i18n("train.resume"), elem_id="train-resume")
    ui.notice = gr.Markdown(elem_id="train-notice")
    ui.status = gr.HTML(label=i18n("train.status"), elem_id="train-status")
    with gr.Row():
        # no fixed height: with one, Gradio clips the legend off the bottom
        ui.plot = gr.LinePlot(x="step", y="loss", color=CURVE, label=i18n("train.loss"),
                              elem_id="loss-plot", scale=3,
                              color_map={RAW: "#9ecae1", SMOOTHED: "#d6604d", VALIDATION: "#2ca25f"})
        ui.log = gr.Textbox(label=i18n("train.log"), lines=LOG_LINES, max_lines=LOG_LINES, interactive=False,
                            autoscroll=True, elem_id="train-log", scale=2)
    ui.runs = gr.Dataframe(headers=["run", "status", "step", "loss", "model", "adapters"],
                           label=i18n("train.history"), interactive=False, elem_id="runs-table")
    ui.cursor = gr.State(None)
    ui.timer = gr.Timer(1.0)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    outputs = [ui.status, ui.plot, ui.log, ui.runs, ui.resume_run, ui.cursor]

    def on_timer_tick(cursor, request: gr.Request):
        run_dir, events, state = current(studio)
        losses = sum(isinstance(e, Evaluation) or (isinstance(e, Progress) and e.loss is not None)
                     for e in events)
        mark = (str(run_dir), len(events), state, losses)
        if mark == tuple(cursor or ()):
            return [gr.update()] * (len(outputs) - 1) + [cursor]
        active = run_dir if studio.slot.job is not None and studio.slot.job.is_active else None
        lang = language_of(request, studio.lang)
        # the plot is redrawn only when a loss point is added, not on every step
        same_plot = cursor is not None and tuple(cursor)[0] == mark[0] and tuple(cursor)[3] == losses
        plot = gr.update() if same_plot else loss_frame(events)
        return (status_html(run_dir, events, state, lang), plot, log_tail(events), runs_table(active),
                gr.update(choices=resumable(active)), mark)

    @guarded
    def on_start_click(request: gr.Request, *values):
        config = form.to_config(values)
        job = studio.slot.start(config)
        return f"{say('msg.started', language_of(request, studio.lang))}: `{job.run_dir.name}`"

    @guarded
    def on_stop_click(request: gr.Request):
        job = studio.slot.job
        lang = language_of(request, studio.lang)
        if job is None or not job.is_active:
            raise JobError(say("msg.nothing_to_stop", lang), "training")
        job.stop()
        return say("msg.stopping", lang)

    @guarded
    def on_resume_click(name):
        if not name:
            raise JobError("no run chosen to resume", "training",
                           "Pick a stopped or interrupted run that saved a checkpoint.")
        job = studio.slot.resume(studio.workspace / "runs" / name)
        return f"▶ `{job.run_dir.name}`"

    def on_progress_poll() -> dict:
        """The job's state for API clients: what the page's status line shows, as data."""
        run_dir, events, state = current(studio)
        progress = next((e for e in reversed(events) if isinstance(e, Progress)), None)
        end = next((e for e in reversed(events) if isinstance(e, (Finished, Failed))), None)
        return {"run_dir": str(run_dir) if run_dir else None, "state": state,
                "step": progress.step if progress else 0, "total_steps": progress.total_steps if progress else 0,
                "loss": progress.loss if progress else None,
                "losses": [e.loss for e in events if isinstance(e, Progress) and e.loss is not None],
                "message": getattr(end, "message", "") or getattr(end, "output", "")}

    poll = dict(fn=on_timer_tick, inputs=ui.cursor, outputs=outputs, show_progress="hidden")
    ui.timer.tick(**poll, api_visibility="private")
    ui.start.click(on_start_click, form.inputs(), ui.notice, api_name="start_training").then(
        **poll, api_visibility="private")
    ui.stop.click(on_stop_click, None, ui.notice, api_name="stop_training").then(**poll, api_visibility="private")
    ui.resume.click(on_resume_click, ui.resume_run, ui.notice, api_name="resume_training").then(
        **poll, api_visibility="private")
    gr.api(on_progress_poll, api_name="training_progress")
    ui.on_timer_tick = on_timer_tick
