"""Launching the real studio app on a free port over a test's workspace, and closing it again."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_studio(ws, lang: str | None = None, auth=None, **studio_options):
    """(url, studio, demo): the app as `python studio.py` builds it; lang None follows the browser.

    `studio_options` are the Studio's own (allowed, max_upload_bytes, logins); `auth` the logins.
    """
    from lora_studio.ui.app import build_app, launch
    from lora_studio.ui.state import Studio

    state = Studio(ws, lang=lang, **studio_options)
    demo = build_app(state)
    url, _ = launch(demo, state, port=free_port(), block=False, auth=auth)
    return url, state, demo


def close_studio(state, demo) -> None:
    """Stop a training job the test left running, then the server."""
    job = state.training.job
    if job is not None and job.is_active:
        job.stop()
        job.join(30)
    demo.close()
