"""The one `Studio` object every tab shares, and the guard that turns handler errors into messages.

A studio owns what lives longer than a page: the workspace (passed in), the roots a page may read
(roots.py: the workspace, the bundled data/ and presets/, the `--allow-path` folders), the upload
limit, the login limiter and who started which job (access.py), the training slot (one job at a
time), the chat engine (one base model in memory), the current download, the runs index (scanned
once per poll) and the chat renderers it has built (tokenizers, no weights). `app.build_app` gets it
and passes it to each tab's builder; nothing here is module-level state.
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..chat import ChatEngine
from ..config import RunConfig
from ..errors import StudioError, debugging, describe, error_kind
from ..events import file_stamp, read_events
from ..jobs import JobSlot
from ..roots import Roots
from ..runs import RunInfo, RunsIndex
from ..workspace import Workspace
from . import paths
from .access import LoginLimiter, Owners, user_of
from .i18n import language_of, say
from .uploads import DEFAULT_LIMIT_MB, MB

log = logging.getLogger("lora_studio.ui")


@dataclass
class Studio:
    workspace: Workspace
    lang: str | None = None                 # forced language, None to follow the browser
    training: JobSlot = field(default_factory=JobSlot)
    downloads: JobSlot = field(default_factory=JobSlot)  # one model download at a time
    exports: JobSlot = field(default_factory=JobSlot)    # one export at a time
    evaluations: JobSlot = field(default_factory=JobSlot)  # one evaluation at a time
    demos: dict = field(default_factory=dict)            # published chat-only demos: run name -> server
    share_note: tuple | None = None         # (catalogue key, url): what the page says about --share
    allowed: tuple = ()                     # --allow-path folders a page may read besides the workspace
    max_upload_bytes: int = DEFAULT_LIMIT_MB * MB
    logins: LoginLimiter = field(default_factory=LoginLimiter)
    owners: Owners = field(default_factory=Owners)  # who started each job and run (access.py)
    chat: ChatEngine = field(init=False)
    runs: RunsIndex = field(init=False)
    roots: Roots = field(init=False)
    _renderers: dict = field(default_factory=dict, init=False, repr=False)
    _events: dict = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self.roots = Roots.for_studio(self.workspace, self.allowed)
        self.chat = ChatEngine(self.workspace)
        self.runs = RunsIndex(self.workspace)

    @property
    def download(self):
        """The current (or last) hub.DownloadJob, None before the first."""
        return self.downloads.job

    def active_run(self) -> Path | None:
        """The run folder the live training job is writing, if one is running."""
        job = self.training.job
        return job.run_dir if job is not None and job.is_active else None

    def scan_runs(self) -> list[RunInfo]:
        """Every run, newest first: one scan that a poll hands to everything it shows."""
        return self.runs.scan(self.active_run())

    def run_events(self, run_dir: Path) -> list:
        """A finished run's events, read again only when its events.jsonl changed."""
        path = Path(run_dir) / "events.jsonl"
        stamp = file_stamp(path)
        with self._lock:
            cached = self._events.get(path)
            if cached is None or cached[0] != stamp:
                self._events.clear()  # the page shows one run at a time
                cached = self._events[path] = (stamp, read_events(path))
            return cached[1]

    def start(self, slot: JobSlot, make, request):
        """Start a job in `slot` and record who started it, under the lock `control` checks with."""
        with self.owners.lock:
            job = slot.launch(make)
            self.owners.record(job, user_of(request))
        return job

    def control(self, job_or_run, request, name: str, action: str) -> None:
        """JobError unless this request's user may stop (cancel, resume) what another session started."""
        self.owners.require(job_or_run, user_of(request), name, action)

    def checked(self, config: RunConfig, data: bool = True, model: bool = True) -> RunConfig:
        """The config once its dataset files and model are inside the roots (see ui/paths.py)."""
        if data:
            paths.dataset_files(self.roots, config.data_files)
        if model:
            paths.check_model(self.roots, config.model_name_or_path, self.workspace)
        return config

    def renderer(self, config: RunConfig, trust_remote_code: bool = False):
        """The ChatRenderer (with its tokenizer) for the config's model; built once, loads no weights."""
        from .. import models

        self.checked(config, data=False)
        path = models.resolve_model_path(config.model_name_or_path, self.workspace)
        # everything that changes how a conversation renders (the template's kwargs as sorted text)
        kwargs = json.dumps(config.chat_template_kwargs, sort_keys=True, ensure_ascii=False)
        key = (str(path), config.template, trust_remote_code, config.system_prompt, kwargs)
        with self._lock:
            if key not in self._renderers:
                self._renderers[key] = models.renderer_for(config, self.workspace,
                                                           trust_remote_code=trust_remote_code)
            return self._renderers[key]

    def guarded(self, fn):
        """Wrap a handler (function or generator) so any error becomes a readable toast, no traceback.

        The toast is in the request's language: give the handler a `request: gr.Request` parameter.
        """
        def fail(exc: BaseException, args, kwargs):
            request = next((a for a in (*args, *kwargs.values()) if _is_request(a)), None)
            _raise_readable(exc, fn.__name__, language_of(request, self.lang))

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure must reach the user as a message
                    fail(exc, args, kwargs)
            return generator

        @functools.wraps(fn)
        def function(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                fail(exc, args, kwargs)
        return function


def _is_request(value) -> bool:
    import gradio as gr

    return isinstance(value, gr.Request)


def user_message(exc: BaseException, lang: str) -> str:
    """What the user reads for an exception: a StudioError's message, or a short internal-error line."""
    return describe(exc).render(lang)


def _raise_readable(exc: BaseException, name: str, lang: str):
    import gradio as gr

    if isinstance(exc, gr.Error):
        raise exc
    if debugging() or not isinstance(exc, StudioError):  # a bug of ours always; every error when asked
        log.error("handler %s failed:\n%s", name, traceback.format_exc())
    title = say(error_kind(exc), lang)
    # gr.Error renders its message as HTML: escape file names and record text. Gradio 6.31's toast
    # heads every error "Error" whatever the title, so the heading goes first in the text.
    # Quotes stay as they are: the text is an element's content, never an attribute, and API clients read it.
    shown = f"【{html.escape(title, quote=False)}】 {html.escape(user_message(exc, lang), quote=False)}"
    raise gr.Error(shown, duration=None, title=title, print_exception=False) from None
