"""The Train tab's machine monitor: GPU memory and utilisation, RAM and the run's tokens/s, every few seconds.

`tab_train.build` calls `build(studio, labels)` and `tab_train.wire` calls `wire(studio, panel)`, one
line each. The panel owns the `monitor.Monitor` (one per built app, so per studio: every open page
shares its readings) and a timer of its own, slower than the tab's one-second poll. The words come
from monitor.lines in the request's language; this module only lays them out.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr

from ..events import Progress
from ..monitor import Monitor, lines
from .i18n import language_of, say
from .state import Studio

REFRESH_SECONDS = 3.0


def build(studio: Studio, labels) -> SimpleNamespace:
    panel = SimpleNamespace(monitor=Monitor())
    panel.html = gr.HTML(elem_id="machine-monitor")
    panel.timer = gr.Timer(REFRESH_SECONDS)
    return panel


def run_speed(studio: Studio) -> float | None:
    """Tokens/s of the live training job's latest Progress event; None when no run is training."""
    job = studio.training.job
    if job is None or not job.is_active:
        return None
    progress = job.events.last(Progress)
    return progress.tokens_per_second if progress is not None else None


def panel_html(snapshot, lang: str) -> str:
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines(snapshot, lang))
    return (f"<div class='machine-monitor'><b>{html.escape(say('monitor.title', lang))}</b>"
            f"<ul>{items}</ul></div>")


def wire(studio: Studio, panel: SimpleNamespace) -> None:
    def on_monitor_tick(request: gr.Request):
        snapshot = panel.monitor.snapshot(tokens_per_second=run_speed(studio))
        return panel_html(snapshot, language_of(request, studio.lang))

    panel.timer.tick(on_monitor_tick, None, panel.html, show_progress="hidden", api_visibility="private")
    panel.on_monitor_tick = on_monitor_tick
