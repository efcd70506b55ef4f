"""Download a model from ModelScope (default) or Hugging Face into the workspace, as a cancellable job.

    job = DownloadJob("Qwen/Qwen2.5-0.5B-Instruct", workspace).start()
    ... poll job.events (DownloadProgress, Log, then Finished or Failed) ...
    job.cancel(); job.join()

or, blocking: `download("Qwen/Qwen2.5-0.5B-Instruct", workspace, on_event=print) -> Path`.

Before any byte moves the job checks, in milliseconds, that the hub is reachable, that the model (and
revision) exists and that the disk has room for what is still missing. Files land in
workspace/models/<owner>--<name>; running the same download again after an interruption or a cancel
skips finished files and resumes the unfinished one. Afterwards the folder is checked for what a model
needs to load (config, tokenizer, weights) and anything missing is reported.

A DownloadJob is a `jobs.Job`: a hub or network problem ends it as a HubError with a message a user can
act on; a bug ends it as an internal error (never disguised as a network problem, see hub_errors).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import HubError
from .events import Event, EventLog, Finished, Log
from .hub_local import (PARTIAL_SUFFIX, LocalModel, check_model_folder, format_bytes,  # noqa: F401
                        list_local_models, missing_msg, missing_text, model_folder)
from .hub_progress import Cancelled, ProgressTracker
from .hub_sources import LABELS, RemoteFile, check_reachable, check_source, fetch, list_files
from .i18n import Msg, msg
from .jobs import Job
from .workspace import Workspace

DISK_MARGIN_BYTES = 200 * 1000**2  # room left over for the file system and the studio's own outputs
POLL_S = 0.1


class DownloadCancelledError(HubError):
    """The user cancelled a download; the partial files stay for the next run to resume."""


class DownloadJob(Job):
    """One model download in a thread of its own: pending -> running [-> stopping] -> completed,
    cancelled or failed; `events` carries its progress and outcome."""

    def __init__(self, model_id: str, workspace: Workspace, source: str = "modelscope", revision: str = "",
                 events: EventLog | None = None):
        super().__init__(events)
        check_source(source)
        self.model_id = model_id.strip()
        if self.model_id.count("/") != 1 or not all(self.model_id.split("/")):
            raise HubError(msg("hub.bad_id"), self.model_id or msg("hub.empty_id"), msg("hub.bad_id_fix"))
        self.source, self.revision = source, revision.strip()
        self.folder = model_folder(self.model_id, workspace)
        self.missing: list[Msg] = []  # what the finished folder still lacks to load as a model
        self.thread_name = f"download {self.model_id}"

    def cancel(self) -> None:
        """Stop at the next received chunk; finished and partial files stay for a later resume."""
        self.stop()

    def describe(self) -> str:
        return self.model_id

    def finished_event(self, status: str) -> Finished:
        return Finished(status=status, output=str(self.folder))

    def work(self) -> str:
        try:
            self._download()
        except Cancelled:  # raised from a progress update once stop() was asked for
            return "cancelled"
        return "completed"

    def _download(self) -> None:
        label = LABELS[self.source]
        check_reachable(self.source)
        self._check_cancelled()
        files = list_files(self.source, self.model_id, self.revision)
        if not files:
            raise HubError(msg("hub.no_files", label=label), self.model_id, msg("hub.check_id"))
        sizes = {f.path: f.size for f in files}
        done = already_downloaded(self.folder, files)
        here = sum(done.values()) + sum(_partial_size(self.folder, f) for f in files if f.path not in done)
        check_free_disk(self.folder, sum(sizes.values()) - here, self.model_id)
        self._check_cancelled()
        self.emit(Log(self._start_message(label, len(files), sum(sizes.values()), here)))
        self.folder.mkdir(parents=True, exist_ok=True)
        tracker = ProgressTracker(sizes, done, self.emit, lambda: self.stop_requested, self.folder)
        fetch(self.source, self.model_id, self.revision, self.folder, tracker, log=self.emit)
        tracker.finish()
        self.missing = check_model_folder(self.folder)
        if self.missing:
            self.emit(Log(msg("hub.not_loadable", folder=str(self.folder), missing=missing_msg(self.missing)),
                          level="warning"))

    def _start_message(self, label: str, count: int, total: int, here: int) -> Msg:
        model = f"{self.model_id}@{self.revision}" if self.revision else self.model_id
        values = dict(model=model, label=label, count=count, size=format_bytes(total), folder=str(self.folder))
        if here:
            return msg("hub.downloading_resumed", here=format_bytes(here), **values)
        return msg("hub.downloading", **values)

    def _check_cancelled(self) -> None:
        if self.stop_requested:
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
        raise HubError(msg("hub.not_enough_disk", needed=format_bytes(needed), free=format_bytes(free)),
                       f"{model_id} -> {folder}",
                       msg("hub.not_enough_disk_fix", more=format_bytes(needed + DISK_MARGIN_BYTES - free)))


def download(model_id: str, workspace: Workspace, source: str = "modelscope", revision: str = "",
             on_event: Callable[[Event], None] | None = None) -> Path:
    """Download and wait; `on_event` sees every event in the calling thread. Returns the model folder.

    A failure raises what ended the job: a HubError, or a bug as itself. Ctrl-C (KeyboardInterrupt)
    cancels the job cleanly and raises DownloadCancelledError.
    """
    job = DownloadJob(model_id, workspace, source, revision).start()
    seen = 0

    def deliver() -> None:
        nonlocal seen
        events = job.events.since(seen)
        seen += len(events)
        for event in events:
            if on_event is not None:
                on_event(event)

    try:
        while not job.join(timeout=POLL_S):
            deliver()
    except KeyboardInterrupt:
        job.cancel()
        job.join()
    deliver()
    if job.state == "failed":
        raise job.error
    if job.state == "cancelled":
        raise DownloadCancelledError(msg("hub.cancelled"), model_id, msg("hub.resume_hint"))
    return job.folder
