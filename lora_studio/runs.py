"""Run directories: naming, creation without overwriting, and reading a run's state back.

A run directory is self-describing: `config.yaml` (the resolved settings), `events.jsonl` (everything
the job reported), `adapter/` (the LoRA weights, loadable by `PeftModel.from_pretrained`),
`checkpoints/` and `command.sh` (the one command that reproduces it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, workspace
from .errors import JobError
from .events import Failed, Finished, Progress, read_events


def runs_root() -> Path:
    return workspace() / "runs"


def sanitize_run_name(name: str) -> str:
    """A safe folder name: letters (any script), digits, '.', '_' and '-' only; no path escapes."""
    name = re.sub(r"[^\w.\-]+", "-", name.strip(), flags=re.UNICODE)
    name = re.sub(r"-{2,}", "-", name).strip(".-_")
    return name[:80] or "run"


def default_run_name(config: RunConfig) -> str:
    model = Path(config.model_name_or_path.rstrip("/")).name or "model"
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(config: RunConfig) -> Path:
    """Make a new, empty run folder; an existing name gets a numeric suffix, never reused."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    base = sanitize_run_name(config.run_name or default_run_name(config))
    for n in range(1, 10_000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise JobError("too many runs with this name", str(root / base), "Choose another run_name.")


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def adapter_dirs(run_dir: Path) -> list[Path]:
    """Every loadable adapter of a run: the final `adapter/` first, then checkpoints, newest first."""
    run_dir = Path(run_dir)
    found = [run_dir / "adapter"] if (run_dir / "adapter" / "adapter_config.json").is_file() else []
    checkpoints = [p for p in (run_dir / "checkpoints").glob("checkpoint-*")
                   if (p / "adapter_config.json").is_file() and p.name.split("-")[-1].isdigit()]
    return found + sorted(checkpoints, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str          # running | completed | stopped | failed | interrupted
    step: int
    total_steps: int
    loss: float | None
    started: float
    model: str
    message: str = ""


def read_run(run_dir: Path, running: bool = False) -> RunInfo:
    """Summarise a run from its events; `running` says whether a live job owns it right now."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / "events.jsonl")
    progress = [e for e in events if isinstance(e, Progress)]
    last = progress[-1] if progress else None
    losses = [e.loss for e in progress if e.loss is not None]
    # no end event: still running, or the process died (even before its first event)
    status, message = ("running" if running else "interrupted"), ""
    for event in reversed(events):
        if isinstance(event, Finished):
            status = "running" if running else event.status
            break
        if isinstance(event, Failed):
            status, message = ("running" if running else "failed"), event.message
            break
    model = _model_of(run_dir / "config.yaml")
    return RunInfo(run_dir.name, run_dir, status, last.step if last else 0,
                   last.total_steps if last else 0, losses[-1] if losses else None,
                   events[0].time if events else run_dir.stat().st_mtime, model, message)


_MODEL_CACHE: dict[Path, tuple[int, str]] = {}  # config.yaml -> (mtime_ns, model): runs are listed every second


def _model_of(config_file: Path) -> str:
    """The base model a run's config names ("" without a config, "?" when it cannot be read)."""
    from .config import load_yaml
    from .errors import ConfigError

    try:
        stamp = config_file.stat().st_mtime_ns
    except OSError:
        return ""
    cached = _MODEL_CACHE.get(config_file)
    if cached is None or cached[0] != stamp:
        try:
            model = load_yaml(config_file).model_name_or_path
        except (ConfigError, OSError):
            model = "?"
        cached = _MODEL_CACHE[config_file] = (stamp, model)
    return cached[1]


def list_runs(active: Path | None = None) -> list[RunInfo]:
    """All runs in the workspace, newest first; `active` is the run a live job is writing."""
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [read_run(p, running=active is not None and p.resolve() == Path(active).resolve())
            for p in root.iterdir() if p.is_dir()]
    return sorted(runs, key=lambda r: r.started, reverse=True)


# What decides how long one optimizer step takes; a past run with the same values times a new one.
PACE_KEYS = ("model_name_or_path", "per_device_train_batch_size", "gradient_accumulation_steps",
             "cutoff_len", "gradient_checkpointing", "padding_free", "dtype")


def measured_pace(config: RunConfig) -> tuple[float, str] | None:
    """(seconds per optimizer step, run name) from the newest run trained like `config`, if any.

    The pace is taken between the first and the last step of that run's latest session, so model
    loading and the first, slower step do not count. A running job's events.jsonl counts as well.
    """
    from .config import load_yaml
    from .errors import ConfigError

    for run in list_runs():
        try:
            past = load_yaml(run.path / "config.yaml")
        except (ConfigError, OSError):
            continue
        if any(getattr(past, key) != getattr(config, key) for key in PACE_KEYS):
            continue
        events = read_events(run.path / "events.jsonl")
        pace = _session_pace([e for e in events if isinstance(e, Progress)])
        if pace:
            return pace, run.name
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
