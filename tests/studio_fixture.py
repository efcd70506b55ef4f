"""Launching the real studio app on a free port over a test's workspace, and closing it again."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_studio(ws, lang: str | None = None):
    """(url, studio, demo): the app as `python studio.py` builds it; lang None follows the browser."""
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    state = Studio(ws, lang=lang)
    demo = build_app(state)
    url, _ = launch(demo, state, port=free_port(), block=False)
    return url, state, demo


def close_studio(state, demo) -> None:
    """Stop a training job the test left running, then the server."""
    job = state.training.job
    if job is not None and job.is_active:
        job.stop()
        job.join(30)
    demo.close()
