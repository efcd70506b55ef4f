"""Typed events that jobs (training, downloads) emit, and the log that carries them.

A job pushes events into an `EventLog`; callers poll it without blocking (`since(n)`), and each event
is also appended to a JSON-lines file so that a reloaded page or another process can read the same
history back with `read_events()`. Texts in events are catalogue messages (`Msg`), stored as key and
parameters, so a page shows a run's log in its own language whatever language wrote it.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from .i18n import Msg


@dataclass
class Event:
    kind = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def message(self) -> str:
        """The event's text in English (a Log's or a Failed's; empty for the others)."""
        text = getattr(self, "text", None)
        return "" if text is None else str(text)

    def to_json(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"kind": self.kind, **{k: v.to_json() if isinstance(v, Msg) else v for k, v in values.items()}}


@dataclass
class Progress(Event):
    """Training progress after an optimizer step."""
    kind = "progress"
    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    elapsed: float = 0.0
    eta: float | None = None


@dataclass
class Evaluation(Event):
    """Loss on the validation split (val_size > 0), measured every save_steps and at the end."""
    kind = "evaluation"
    step: int
    eval_loss: float


@dataclass
class EarlyStopped(Event):
    """Validation loss stopped improving: training ended at `step`, the adapter is the one of `best_step`."""
    kind = "early_stopped"
    step: int
    best_step: int
    best_eval_loss: float


@dataclass
class Log(Event):
    """A line for the log; `level` is info, warning or debug."""
    kind = "log"
    text: Msg
    level: str = "info"



@dataclass
class Finished(Event):
    """The job ended normally; `status` is 'completed', 'stopped' or 'cancelled'."""
    kind = "finished"
    status: str
    output: str = ""
    step: int = 0
    loss: float | None = None
    text: Msg | None = None  # a summary for the log (an export: where it is and whether it answers alike)


@dataclass
class Failed(Event):
    kind = "failed"
    text: Msg
    step: int = 0


@dataclass
class DownloadProgress(Event):
    kind = "download"
    bytes_done: int
    bytes_total: int
    speed: float = 0.0
    eta: float | None = None
    current_file: str = ""


@dataclass
class EvalProgress(Event):
    """An evaluation's progress: `done` of `total` answers so far, the last for `checkpoint` (evaluation.py)."""
    kind = "eval_progress"
    done: int
    total: int
    checkpoint: str = ""
    stage: str = ""  # probes | validation | control


@dataclass
class ExportProgress(Event):
    """An export's progress: `stage` is a catalogue key (export.STAGES), done/total count within it."""
    kind = "export"
    stage: str
    done: int = 0
    total: int = 0


@dataclass
class TrackerLink(Event):
    """Where the run's experiment tracker shows it (trackers.py): `url` a web address, or for a local
    tracker its folder; `text` says where and how to open it."""
    kind = "tracker_link"
    tracker: str
    url: str
    text: Msg


EVENT_TYPES = MappingProxyType({cls.kind: cls for cls in (Progress, Evaluation, Log, Finished, Failed,
                                                         DownloadProgress, EarlyStopped, EvalProgress,
                                                         ExportProgress, TrackerLink)})


def event_from_json(values: dict) -> Event:
    values = dict(values)
    cls = EVENT_TYPES[values.pop("kind")]
    if "message" in values and cls in (Log, Failed):  # written before messages had keys: shown as it was
        values["text"] = Msg("errors.raw", {"text": values.pop("message")})
    if isinstance(values.get("text"), dict):
        values["text"] = Msg.from_json(values["text"])
    return cls(**values)


class EventLog:
    """A thread-safe list of events, mirrored to a JSON-lines file when given a path."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")

    def since(self, index: int) -> list[Event]:
        """Events from position `index` on; callers keep their own cursor."""
        with self._lock:
            return self._events[index:]

    def all(self) -> list[Event]:
        return self.since(0)

    def last(self, kind: type[Event] | None = None) -> Event | None:
        with self._lock:
            for event in reversed(self._events):
                if kind is None or isinstance(event, kind):
                    return event
        return None


def read_events(path: Path) -> list[Event]:
    """Read an events.jsonl back; a half-written last line (a crash mid-write) is skipped."""
    return [event for _, event in _parsed_lines(path)]


def drop_steps_after(path: Path, step: int) -> list[Event]:
    """Rewrite an events.jsonl without the Progress and Evaluation events after `step`; returns what is kept.

    A resume from the checkpoint of `step` trains the steps after it again: their new values replace
    the lost ones, so the loss curve holds one value a step. Everything else (the log, earlier ends)
    stays; a half-written line (a crash mid-write) goes, so the next event starts on a line of its own.
    """
    from .files import write_text_atomic

    kept = [(line, event) for line, event in _parsed_lines(path)
            if not (isinstance(event, (Progress, Evaluation)) and event.step > step)]
    write_text_atomic(path, "".join(line + "\n" for line, _ in kept))
    return [event for _, event in kept]


def _parsed_lines(path: Path) -> list[tuple[str, Event]]:
    """(line, event) for each readable line of an events.jsonl; [] when it is missing or not a file."""
    try:
        info = Path(path).stat()
    except OSError:
        return []
    if not stat.S_ISREG(info.st_mode):
        return []
    parsed = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            parsed.append((line, event_from_json(json.loads(line))))
        except (ValueError, KeyError, TypeError):
            continue
    return parsed


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, None when it is missing: what a cache compares to see a change."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)
