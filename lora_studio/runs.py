"""Run directories: naming, creation without overwriting, and reading a run's state back.

A run directory is self-describing: `config.yaml` (the resolved settings), `events.jsonl` (everything
the job reported), `adapter/` (the LoRA weights, loadable by `PeftModel.from_pretrained`),
`checkpoints/` and `command.sh` (the one command that reproduces it).

`RunsIndex` is what a front end polls: the studio owns one and scans the workspace's runs once a
second, so it reads a run's events.jsonl and config.yaml again only when they changed.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoints import adapter_is_complete, complete_checkpoints
from .config import RunConfig, fields_with, load_yaml
from .errors import ConfigError, JobError
from .events import Failed, Finished, Progress, file_stamp, read_events
from .i18n import Msg, msg
from .workspace import Workspace


def sanitize_run_name(name: str) -> str:
    """A safe folder name: letters (any script), digits, '.', '_' and '-' only; no path escapes."""
    name = re.sub(r"[^\w.\-]+", "-", name.strip(), flags=re.UNICODE)
    name = re.sub(r"-{2,}", "-", name).strip(".-_")
    return name[:80] or "run"


def default_run_name(config: RunConfig) -> str:
    model = Path(config.model_name_or_path.rstrip("/")).name or "model"
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(config: RunConfig, workspace: Workspace) -> Path:
    """Make a new, empty run folder; an existing name gets a numeric suffix, never reused."""
    root = workspace.runs
    root.mkdir(parents=True, exist_ok=True)
    base = sanitize_run_name(config.run_name or default_run_name(config))
    for n in range(1, 10_000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise JobError(msg("runs.too_many"), str(root / base), msg("runs.too_many_fix"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole checkpoint of a run (a torn one, left by a crash, does not count)."""
    complete = complete_checkpoints(Path(run_dir) / "checkpoints")
    return complete[-1] if complete else None


def adapter_dirs(run_dir: Path) -> list[Path]:
    """Every loadable adapter of a run: the final `adapter/` first, then whole checkpoints, newest first."""
    run_dir = Path(run_dir)
    found = [run_dir / "adapter"] if adapter_is_complete(run_dir / "adapter") else []
    return found + complete_checkpoints(run_dir / "checkpoints")[::-1]


def find_run(name_or_path: str | Path, workspace: Workspace) -> Path:
    """A run folder from a path, or from a run's name under the workspace's runs/."""
    given = Path(name_or_path).expanduser()
    for candidate in (given, workspace.runs / str(name_or_path)):
        if candidate.is_dir():
            return candidate
    raise JobError(msg("runs.no_such_run", name=str(name_or_path)), str(workspace.runs), msg("runs.no_such_run_fix"))


def resolved_config(config: RunConfig, run_name: str) -> RunConfig:
    """What a run's config.yaml holds: its folder's name and absolute data files (it may run from anywhere)."""
    return config.replace(run_name=run_name,
                          data_files=[str(Path(f).expanduser().resolve()) for f in config.data_files])


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str                   # a state key: running | completed | stopped | failed | interrupted
    step: int
    total_steps: int
    loss: float | None
    started: float
    model: str                    # the base model ("" without a config.yaml, "?" when it cannot be read)
    message: Msg | None = None    # why it failed
    config: RunConfig | None = None
    pace: float | None = None     # seconds per optimizer step in its latest session (None: too few steps)
    ended: str | None = None      # the status its last Finished/Failed event gave (None: no end yet)


def read_run(run_dir: Path, running: bool = False) -> RunInfo:
    """Summarise a run from its files; `running` says whether a live job owns it right now."""
    run_dir = Path(run_dir)
    return _combined(_events_part(run_dir), _config_part(run_dir), running)


def _events_part(run_dir: Path) -> RunInfo:
    """What a run's events.jsonl says (status, model and config are filled in by `_combined`)."""
    events = read_events(run_dir / "events.jsonl")
    progress = [e for e in events if isinstance(e, Progress)]
    last = progress[-1] if progress else None
    losses = [e.loss for e in progress if e.loss is not None]
    ended, message = None, None
    for event in reversed(events):
        if isinstance(event, Finished):
            ended = event.status
            break
        if isinstance(event, Failed):
            ended, message = "failed", event.text
            break
    started = events[0].time if events else run_dir.stat().st_mtime
    return RunInfo(run_dir.name, run_dir, "", last.step if last else 0, last.total_steps if last else 0,
                   losses[-1] if losses else None, started, "", message, pace=_session_pace(progress),
                   ended=ended)


def _config_part(run_dir: Path) -> tuple[str, RunConfig | None]:
    """(model name, settings) from a run's config.yaml: ("", None) without one, ("?", None) if unreadable."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return "", None
    try:
        config = load_yaml(config_file)
    except (ConfigError, OSError):
        return "?", None
    return config.model_name_or_path, config


def _combined(events: RunInfo, config: tuple[str, RunConfig | None], running: bool) -> RunInfo:
    # no end event and no live job: the process died (even before its first event), unless a launcher's
    # processes still train it (started by a studio that has since restarted)
    if not running and events.ended is None:
        from .launch_job import still_running

        running = still_running(events.path)
    status = "running" if running else events.ended or "interrupted"
    return replace(events, status=status, model=config[0], config=config[1])


class RunsIndex:
    """The workspace's runs, kept up to date by `scan()`; each file is parsed again only once it changed."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._events: dict[Path, tuple] = {}   # run folder -> (events.jsonl stamp, its RunInfo part)
        self._configs: dict[Path, tuple] = {}  # run folder -> (config.yaml stamp, (model, config))
        self._lock = threading.Lock()  # a studio's pages poll from several threads at once

    def scan(self, active: Path | None = None) -> list[RunInfo]:
        """Every run, newest first; `active` is the folder a live job is writing. One listing of runs/."""
        root = self.workspace.runs
        folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        active_dir = Path(active).resolve() if active is not None else None
        runs = []
        with self._lock:
            for folder in folders:
                events = self._cached(self._events, folder, "events.jsonl", _events_part)
                config = self._cached(self._configs, folder, "config.yaml", _config_part)
                runs.append(_combined(events, config, folder.resolve() == active_dir))
            for cache in (self._events, self._configs):  # forget runs that were deleted
                for gone in set(cache) - set(folders):
                    del cache[gone]
        return sorted(runs, key=lambda r: r.started, reverse=True)

    @staticmethod
    def _cached(cache: dict, folder: Path, file_name: str, read):
        """`read(folder)` again only when the file's stamp (mtime, size) differs from the cached one."""
        stamp = file_stamp(folder / file_name)
        held = cache.get(folder)
        if held is None or held[0] != stamp:
            held = cache[folder] = (stamp, read(folder))
        return held[1]


def list_runs(workspace: Workspace, active: Path | None = None) -> list[RunInfo]:
    """All runs in the workspace, newest first (a one-off scan; a front end that polls keeps a RunsIndex)."""
    return RunsIndex(workspace).scan(active)


def measured_pace(config: RunConfig, runs: list[RunInfo]) -> tuple[float, str] | None:
    """(seconds per optimizer step, run name) from the newest of `runs` trained like `config`, if any.

    "Like" means the same value of every setting marked `pace` in its metadata. The pace is taken
    between the first and the last step of that run's latest session, so model loading and the first,
    slower step do not count. A running job's events count as well.
    """
    keys = fields_with("pace")
    for run in runs:
        if run.config is None or run.pace is None:
            continue
        if all(getattr(run.config, key) == getattr(config, key) for key in keys):
            return run.pace, run.name
    return None


def _session_pace(progress: list[Progress]) -> float | None:
    if len(progress) < 3:
        return None
    first = len(progress) - 1
    while first > 0 and progress[first - 1].step < progress[first].step \
            and progress[first - 1].elapsed <= progress[first].elapsed:
        first -= 1  # walk back while the steps and the clock both rise: one session
    start, end = progress[first], progress[-1]
    if end.step - start.step < 2:
        return None
    return (end.elapsed - start.elapsed) / (end.step - start.step)
