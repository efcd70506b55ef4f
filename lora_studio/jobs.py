"""Job: the one model of long-running work (training, downloads, and the exports and evaluations to come).

A job owns its thread and moves through states

    pending -> running [-> stopping] -> completed | stopped | cancelled | failed

reporting typed events (`events.py`) into its `EventLog`, which mirrors them to a JSON-lines file
when it has a path, so a reloaded page or another process reads the same history. Callers poll the
log without blocking; `stop()` asks the work to end at its next safe point; `join()` waits.

A subclass implements `work()`, which returns the final state ('completed', 'stopped', ...) and
checks `self.stop_requested` where it can stop. Any exception becomes a `Failed` event: a user's
mistake (StudioError) with its message, a bug of ours as an internal error whose traceback goes to
the console; with LORA_STUDIO_DEBUG=1 every traceback is also a debug Log event.
"""

from __future__ import annotations

import logging
import threading
import traceback

from .errors import JobError, StudioError, debugging, describe
from .events import EventLog, Failed, Finished, Log
from .i18n import msg

LOG = logging.getLogger("lora_studio.jobs")
ACTIVE_STATES = ("pending", "running", "stopping")
END_STATES = ("completed", "stopped", "cancelled", "failed")


class Job:
    thread_name = "lora-studio-job"

    def __init__(self, events: EventLog | None = None):
        self.events = events if events is not None else EventLog()
        self.state = "pending"
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what a subclass provides ----------------------------------------------------------------
    def prepare(self) -> None:
        """Runs in the caller's thread before the job's thread starts (make folders, open the log)."""

    def work(self) -> str:
        """The job itself, in its own thread; returns the final state."""
        raise NotImplementedError

    def finished_event(self, status: str) -> Finished:
        return Finished(status=status)

    def on_failure(self, exc: BaseException) -> None:
        """After the Failed event: keep what helps a bug report (a subclass writes its error.log)."""

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> "Job":
        if self.state != "pending":
            raise JobError(msg("jobs.already_started", state=msg(f"status.{self.state}")), self.thread_name)
        self.prepare()
        self.state = "running"
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """The whole job in the calling thread; `start()` runs it in a thread of its own."""
        self.state = "stopping" if self._stop.is_set() else "running"
        try:
            status = self.work()
            self.state = status
            self.emit(self.finished_event(status))
        except BaseException as exc:  # noqa: BLE001 - any failure must become an event, not a crash
            self.error, self.state = exc, "failed"
            self.emit(Failed(text=describe(exc), step=self.current_step()))
            if debugging():
                self.emit(Log(msg("jobs.traceback", text=traceback.format_exc()), level="debug"))
            elif not isinstance(exc, StudioError):  # a bug of ours: the console keeps its traceback
                LOG.error("%s failed:\n%s", self.thread_name, traceback.format_exc())
            self.on_failure(exc)
        finally:
            self._ended.set()

    def stop(self) -> None:
        """Ask the work to end at its next safe point; what it has done so far is kept."""
        if self.state in ("pending", "running"):
            self._stop.set()
            self.state = "stopping"

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True once it has (a job never started counts as ended).

        Waits on an Event, not Thread.join: on Python < 3.13 a Ctrl-C landing inside Thread.join marks
        the still-running thread as finished (bpo-45274), and a stop would never be awaited.
        """
        if self._thread is None:
            return self.state != "pending"
        return self._ended.wait(timeout)

    @property
    def is_active(self) -> bool:
        if self.state == "pending":
            return True
        return self.state in ACTIVE_STATES and not self._ended.is_set()

    def emit(self, event) -> None:
        self.events.emit(event)

    def describe(self) -> str:
        """A name for the job in messages: the run folder, the model id, ..."""
        return self.thread_name

    def current_step(self) -> int:
        """The step a failure happened at, for jobs that count steps."""
        return 0


class JobSlot:
    """Holds the one job of a kind a process runs at a time; starting a second while it runs is refused."""

    def __init__(self):
        self.job: Job | None = None
        self._lock = threading.Lock()

    def launch(self, make) -> Job:
        """Make a job with `make()` and start it, unless the slot's job is still active."""
        with self._lock:
            if self.job is not None and self.job.is_active:
                raise JobError(msg("jobs.busy", name=self.job.describe()), self.job.thread_name,
                               msg("jobs.busy_fix"))
            job = make()
            job.start()
            self.job = job
            return job
