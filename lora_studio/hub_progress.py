"""Aggregate per-file download progress from the hub clients into one stream of `DownloadProgress` events.

The ModelScope client makes one progress-callback object per file and calls it from up to four worker
threads; the Hugging Face client drives tqdm bars. Both are funnelled into a `ProgressTracker`, which
keeps a byte count per file (so a file that restarts or resumes is counted once), derives speed and
ETA over a sliding window, and rate-limits the events it emits.

The clients have no cancel method, so cancelling works by raising `Cancelled` from the next progress
update. It derives from BaseException on purpose: the ModelScope client retries any `Exception` raised
while a file streams and records `Exception`s from worker threads as per-file failures while the other
files carry on, but it lets a BaseException through, sets its internal cancel event (stopping the other
workers at their next chunk) and keeps every partial `.incomplete` file for the next run to resume.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .events import DownloadProgress
from .hub_local import PARTIAL_SUFFIX

SPEED_WINDOW_S = 3.0  # speed is averaged over this many seconds so one fast chunk does not dominate
EMIT_INTERVAL_S = 0.25  # at most four progress events a second: enough for a bar, cheap for a page


class Cancelled(BaseException):
    """Raised inside a hub client's worker thread to stop a download the user cancelled."""


class ProgressTracker:
    """Thread-safe byte counts for one repository download.

    `sizes` maps each remote file to its size; `done` gives the bytes already on disk before this run
    (finished files the client will skip without reporting them); `should_stop` says whether the job
    was asked to stop (its `stop_requested`).
    """

    def __init__(self, sizes: dict[str, int], done: dict[str, int], emit: Callable[[DownloadProgress], None],
                 should_stop: Callable[[], bool], folder: Path | None = None):
        self.total = sum(sizes.values())
        self._done = dict(done)
        self._emit = emit
        self._should_stop = should_stop
        self._folder = folder
        self._resumed: dict[str, int] = {}  # bytes a client re-reports from a partial file: not new traffic
        self._lock = threading.Lock()
        self._transferred = 0
        self._window: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self._last_emit = 0.0
        self.current_file = ""

    @property
    def bytes_done(self) -> int:
        with self._lock:
            return min(sum(self._done.values()), self.total)

    def check_cancelled(self) -> None:
        if self._should_stop():
            raise Cancelled()

    def start_file(self, name: str) -> None:
        """A client begins (or restarts) `name`: its count starts again from zero."""
        self.check_cancelled()
        partial = self._folder / (name + PARTIAL_SUFFIX) if self._folder else None
        with self._lock:
            self._done[name] = 0
            self._resumed[name] = partial.stat().st_size if partial and partial.is_file() else 0
            self.current_file = name

    def advance(self, name: str, size: int) -> None:
        """`size` more bytes of `name` arrived (negative when a client throws a partial file away)."""
        self.check_cancelled()
        with self._lock:
            self._done[name] = self._done.get(name, 0) + size
            skipped = min(max(size, 0), self._resumed.get(name, 0))
            self._resumed[name] = self._resumed.get(name, 0) - skipped
            self._transferred += max(size - skipped, 0)
            self.current_file = name
            event = self._event_if_due(force=False)
        if event is not None:
            self._emit(event)

    def end_file(self, name: str) -> None:
        """The client is done with `name` (finished or failed); never raises, clients call it while unwinding."""
        with self._lock:
            event = self._event_if_due(force=False)
        if event is not None:
            self._emit(event)

    def finish(self) -> None:
        """Emit the final state whatever the rate limit says, so a bar ends on the true numbers."""
        with self._lock:
            event = self._event_if_due(force=True)
        self._emit(event)

    def _event_if_due(self, force: bool) -> DownloadProgress | None:
        now = time.monotonic()
        done = min(sum(self._done.values()), self.total)
        if not force and now - self._last_emit < EMIT_INTERVAL_S and done < self.total:
            return None
        self._last_emit = now
        self._window.append((now, self._transferred))
        while len(self._window) > 2 and now - self._window[0][0] > SPEED_WINDOW_S:
            self._window.popleft()
        started, bytes_then = self._window[0]
        speed = (self._transferred - bytes_then) / (now - started) if now > started else 0.0
        eta = (self.total - done) / speed if speed > 0 else (0.0 if done >= self.total else None)
        return DownloadProgress(bytes_done=done, bytes_total=self.total, speed=speed, eta=eta,
                                current_file=self.current_file)


def modelscope_callback(tracker: ProgressTracker) -> type:
    """A ProgressCallback class for `snapshot_download(progress_callbacks=[...])` feeding `tracker`.

    The client wants a class (it makes one instance per file), so the tracker is bound by closure.
    """
    from modelscope.hub.callback import ProgressCallback

    class TrackerCallback(ProgressCallback):
        def __init__(self, filename: str, file_size: int):
            super().__init__(filename, file_size)
            tracker.start_file(filename)

        def update(self, size: int) -> None:
            tracker.advance(self.filename, size)

        def end(self) -> None:
            tracker.end_file(self.filename)

    return TrackerCallback


def huggingface_tqdm(tracker: ProgressTracker) -> type:
    """A tqdm class for `huggingface_hub.snapshot_download(tqdm_class=...)` feeding `tracker`.

    huggingface_hub sums every file's bytes into one bar described "Reconstructing ..." (the bytes
    written to disk) and reports files through others; only that byte bar is counted, and nothing is
    drawn: the caller shows the tracker's events instead.
    """
    from tqdm.auto import tqdm

    class TrackerTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            self._counts_bytes = str(kwargs.get("desc", "")).startswith("Reconstructing")
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n=1):
            if self._counts_bytes:
                tracker.advance("", int(n or 0))
            else:
                tracker.check_cancelled()
            return None

    return TrackerTqdm
