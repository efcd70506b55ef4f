"""Download a model from ModelScope (default) or Hugging Face into the workspace, as a cancellable job.

    job = DownloadJob("Qwen/Qwen2.5-0.5B-Instruct").start()
    ... poll job.events (DownloadProgress, Log, then Finished or Failed) ...
    job.cancel(); job.join()

or, blocking: `download("Qwen/Qwen2.5-0.5B-Instruct", on_event=print) -> Path`.

Before any byte moves the job checks, in milliseconds, that the hub is reachable, that the model (and
revision) exists and that the disk has room for what is still missing. Files land in
workspace/models/<owner>--<name>; running the same download again after an interruption or a cancel
skips finished files and resumes the unfinished one. Afterwards the folder is checked for what a model
needs to load (config, tokenizer, weights) and anything missing is reported.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import HubError, StudioError
from .events import Event, EventLog, Failed, Finished, Log
from .hub_local import (PARTIAL_SUFFIX, LocalModel, check_model_folder, format_bytes,  # noqa: F401
                        list_local_models, model_folder)
from .hub_progress import Cancelled, ProgressTracker
from .hub_sources import LABELS, RESUME_HINT, RemoteFile, check_reachable, check_source, fetch, list_files

DISK_MARGIN_BYTES = 200 * 1000**2  # room left over for the file system and the studio's own outputs

STATES = ("pending", "running", "completed", "cancelled", "failed")


class DownloadCancelledError(HubError):
    """The user cancelled a download; the partial files stay for the next run to resume."""


class DownloadJob:
    """One model download in a background thread. `state` moves pending -> running -> one of
    completed / cancelled / failed; `events` carries its progress and outcome."""

    def __init__(self, model_id: str, source: str = "modelscope", revision: str = "",
                 events: EventLog | None = None):
        check_source(source)
        self.model_id = model_id.strip()
        if self.model_id.count("/") != 1 or not all(self.model_id.split("/")):
            raise HubError("a hub model id has the form owner/name", self.model_id or "(empty)",
                           "For example: python studio.py download Qwen/Qwen2.5-0.5B-Instruct")
        self.source, self.revision = source, revision.strip()
        self.folder = model_folder(self.model_id)
        self.events = events if events is not None else EventLog()
        self.state = "pending"
        self.error: StudioError | None = None
        self.missing: list[str] = []  # what the finished folder still lacks to load as a model
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "DownloadJob":
        if self._thread is not None:
            raise HubError("this download job was already started", self.model_id)
        self.state = "running"
        self._thread = threading.Thread(target=self.run, name=f"download {self.model_id}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop at the next received chunk; finished and partial files stay for a later resume."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job; True once it has ended.

        Waits on an Event, not Thread.join: on Python < 3.13 a Ctrl-C landing inside Thread.join marks
        the still-running thread as finished (bpo-45274's fix), and the cancel would never be awaited.
        """
        if self.state == "pending":
            return False
        return self._ended.wait(timeout)

    def run(self) -> None:
        """The whole download in the calling thread; `start()` runs it in a background one."""
        self.state = "running"
        try:
            self._download()
        except Cancelled:
            self.state = "cancelled"
            self.events.emit(Finished(status="cancelled", output=str(self.folder)))
        except StudioError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug or an error nobody translated: still end the job with a message
            self._fail(HubError(f"the download failed unexpectedly: {type(exc).__name__}: {exc}",
                                self.model_id, RESUME_HINT))
        else:
            self.state = "completed"
            self.events.emit(Finished(status="completed", output=str(self.folder)))
        finally:
            self._ended.set()

    def _fail(self, exc: StudioError) -> None:
        self.error, self.state = exc, "failed"
        self.events.emit(Failed(message=str(exc)))

    def _download(self) -> None:
        label = LABELS[self.source]
        check_reachable(self.source)
        self._check_cancelled()
        files = list_files(self.source, self.model_id, self.revision)
        if not files:
            raise HubError(f"this model has no files on {label}", self.model_id, "Check the model id.")
        sizes = {f.path: f.size for f in files}
        done = already_downloaded(self.folder, files)
        here = sum(done.values()) + sum(_partial_size(self.folder, f) for f in files if f.path not in done)
        remaining = sum(sizes.values()) - here
        check_free_disk(self.folder, remaining, self.model_id)
        self._check_cancelled()
        self.events.emit(Log(
            f"Downloading {self.model_id}{'@' + self.revision if self.revision else ''} from {label}: "
            f"{len(files)} files, {format_bytes(sum(sizes.values()))}"
            f"{f' ({format_bytes(here)} already here)' if here else ''} into {self.folder}"))
        self.folder.mkdir(parents=True, exist_ok=True)
        tracker = ProgressTracker(sizes, done, self.events.emit, self._cancel, self.folder)
        fetch(self.source, self.model_id, self.revision, self.folder, tracker, log=self.events.emit)
        tracker.finish()
        self.missing = check_model_folder(self.folder)
        if self.missing:
            self.events.emit(Log(f"Downloaded, but {self.folder} is not a loadable model: missing "
                                 f"{'; '.join(self.missing)}.", level="warning"))

    def _check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()


def already_downloaded(folder: Path, files: list[RemoteFile]) -> dict[str, int]:
    """Bytes of each listed file already in `folder` at its full size (the client skips those)."""
    done = {}
    for remote in files:
        local = folder / remote.path
        if local.is_file() and local.stat().st_size == remote.size:
            done[remote.path] = remote.size
    return done


def _partial_size(folder: Path, remote: RemoteFile) -> int:
    partial = folder / (remote.path + PARTIAL_SUFFIX)
    return partial.stat().st_size if partial.is_file() else 0


def check_free_disk(folder: Path, needed: int, model_id: str) -> None:
    """Refuse to start a download that cannot fit, instead of failing hours in with a full disk."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + DISK_MARGIN_BYTES > free:
        raise HubError(f"not enough free disk: the download needs {format_bytes(needed)} more and "
                       f"{format_bytes(free)} is free", f"{model_id} -> {folder}",
                       f"Free at least {format_bytes(needed + DISK_MARGIN_BYTES - free)}, or point "
                       "LORA_STUDIO_HOME at a larger disk.")


def download(model_id: str, source: str = "modelscope", revision: str = "",
             on_event: Callable[[Event], None] | None = None) -> Path:
    """Download and wait; `on_event` sees every event in the calling thread. Returns the model folder.

    Ctrl-C (KeyboardInterrupt) cancels the job cleanly and raises DownloadCancelledError.
    """
    job = DownloadJob(model_id, source, revision).start()
    seen = 0

    def deliver() -> None:
        nonlocal seen
        events = job.events.since(seen)
        seen += len(events)
        for event in events:
            if on_event is not None:
                on_event(event)

    try:
        while not job.join(timeout=0.1):
            deliver()
    except KeyboardInterrupt:
        job.cancel()
        job.join()
    deliver()
    if job.state == "failed":
        raise job.error
    if job.state == "cancelled":
        raise DownloadCancelledError("download cancelled", model_id, RESUME_HINT)
    return job.folder
