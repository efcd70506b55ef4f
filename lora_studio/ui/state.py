"""The one `Studio` object every tab shares, and the guard that turns handler errors into messages.

A studio owns the training slot (one job at a time), the chat engine (one base model in memory), the
current download, and small caches of cheap things (tokenizers, loaded dataset files). It is created
once in `app.build_app` and passed to each tab's builder; nothing here is module-level state.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..chat import ChatEngine
from ..config import RunConfig, workspace
from ..errors import ConfigError, DataError, HubError, JobError, ModelError, StudioError
from ..training import JobSlot

log = logging.getLogger("lora_studio.ui")


@dataclass
class Studio:
    lang: str | None = None                 # forced language, None to follow the browser
    slot: JobSlot = field(default_factory=JobSlot)
    chat: ChatEngine = field(default_factory=ChatEngine)
    download: object | None = None          # the current hub.DownloadJob
    share_note: tuple | None = None         # (i18n key, url): what the page says about --share
    _renderers: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def workspace(self) -> Path:
        return workspace()

    def renderer(self, config: RunConfig):
        """The ChatRenderer (with its tokenizer) for the config's model; cached, loads no weights."""
        from .. import models
        from ..templates import ChatRenderer

        path = models.resolve_model_path(config.model_name_or_path)
        key = (str(path), config.template, config.trust_remote_code, config.system_prompt)
        with self._lock:
            if key not in self._renderers:
                model_config = models.read_model_config(path)
                tokenizer = models.load_tokenizer(path, config, model_config)
                self._renderers[key] = ChatRenderer(tokenizer, config.template,
                                                    model_config.get("model_type"), config.system_prompt)
            return self._renderers[key]


def user_message(exc: BaseException) -> str:
    """What the user reads for an exception: the StudioError's message, or a short internal error."""
    if isinstance(exc, StudioError):
        return exc.message
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"Internal error: {type(exc).__name__}: {first}. The studio keeps running and nothing was "
            "changed; the details are in the console where the studio was started.")


def _raise_readable(exc: BaseException, name: str):
    import gradio as gr

    if isinstance(exc, gr.Error):
        raise exc
    if not isinstance(exc, StudioError):
        log.error("handler %s failed:\n%s", name, traceback.format_exc())
    # gr.Error renders its message as HTML: escape file names and record text
    # Gradio 6.31's toast heads every error "Error" whatever the title: the heading goes first in the text
    title = error_title(exc)
    raise gr.Error(f"【{title}】 {html.escape(user_message(exc))}", duration=None, title=title,
                   print_exception=False) from None


ERROR_TITLES = {ConfigError: "设置有误 · Setting problem", DataError: "数据有问题 · Dataset problem",
                ModelError: "模型问题 · Model problem", JobError: "训练任务 · Training job",
                HubError: "下载失败 · Download failed"}


def error_title(exc: BaseException) -> str:
    """A bilingual heading for the message, by the kind of error (the message itself is English)."""
    for kind, title in ERROR_TITLES.items():
        if isinstance(exc, kind):
            return title
    return "出错了 · Error" if isinstance(exc, StudioError) else "内部错误 · Internal error"


def guarded(fn):
    """Wrap a handler (function or generator) so any error becomes a readable gr.Error, no traceback."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure must reach the user as a message
                _raise_readable(exc, fn.__name__)
        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            _raise_readable(exc, fn.__name__)
    return function
