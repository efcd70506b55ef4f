"""Run comparison: the settings two or more runs differ in, and their results side by side.

    runs = [compared_run(info) for info in chosen]      # RunInfo from runs.list_runs / a RunsIndex
    settings_diff([run.config for run in runs])         # [(setting, (value per run)), ...] where they differ
    metrics_table(runs)                                 # [(metric, (value per run)), ...]
    train_again_config(runs[0])                         # its settings for a new run (no run name)

What a run did comes from its own folder: events.jsonl (the loss curve, steps, speed, an early stop)
and metrics.json when an evaluation wrote one (`read_metrics` reads it defensively: a missing,
half-written or odd file gives no metrics, never an error). The studio's 对比 tab draws these.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import RunConfig, Setting, fields_by_name
from .errors import JobError
from .events import EarlyStopped, Evaluation, Progress, read_events
from .i18n import msg
from .runs import RunInfo

METRICS_FILE = "metrics.json"
BASE, TUNED = "base", "tuned"  # an evaluation's base model, and the adapter its metrics are shown for
FINAL = "adapter"              # how an evaluation names the final adapter/
METRICS_MAX_BYTES = 8 << 20  # a metrics file is small; a bigger one is no evaluation's
NESTING = 4                  # levels of metrics.json flattened into one row each
# what every run's events tell, in the order the table shows them (catalogue: compare.metric_<name>)
SUMMARY = ("status", "steps", "final_loss", "best_eval_loss", "best_step", "early_stop", "tokens_per_second",
           "train_time")


@dataclass(frozen=True)
class ComparedRun:
    name: str
    path: Path
    status: str
    config: RunConfig | None           # None: no readable config.yaml
    events: tuple = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)  # metrics.json flattened: "base.chrf" -> 41.2


def compared_run(info: RunInfo) -> ComparedRun:
    """A run as the comparison reads it: its settings, every event and its metrics."""
    events = tuple(read_events(info.path / "events.jsonl"))
    return ComparedRun(info.name, info.path, info.status, info.config, events,
                       read_metrics(info.path, delivered(info, events)))


def delivered(info: RunInfo, events: Sequence) -> list[str]:
    """Names of the adapter a run delivers, most telling first: the one its user marked best (chat and
    export use it), the final adapter/, and with early stopping the checkpoint of the lowest validation
    loss (adapter/ holds its weights; an evaluation names it so when they are the same)."""
    from .probes import best_adapter

    marked = best_adapter(info.path)
    names = ([marked.name] if marked is not None else []) + [FINAL]
    evaluations = [e for e in events if isinstance(e, Evaluation)]
    if info.config is not None and info.config.early_stopping_patience and evaluations:
        names.append(f"checkpoint-{min(evaluations, key=lambda e: e.eval_loss).step}")
    return names


def chosen_runs(names: Sequence[str], runs: Sequence[RunInfo]) -> list[ComparedRun]:
    """The runs named (as the run list shows them), in the order given; an unknown name is refused."""
    by_name = {run.name: run for run in runs}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise JobError(msg("compare.unknown_runs", names=", ".join(unknown)), "runs",
                       msg("compare.unknown_runs_fix", runs=", ".join(by_name) or "-"))
    return [compared_run(by_name[name]) for name in dict.fromkeys(names)]


# --- settings ----------------------------------------------------------------------------------------
def settings_diff(configs: Sequence[RunConfig | None]) -> list[tuple[str, tuple]]:
    """(setting, (value per run)) for every setting whose value is not the same in all runs, in RunConfig's
    field order. The run name is left out (it heads each run's column); a run without settings (None)
    shows None and is left out of the comparison itself."""
    known = [config for config in configs if config is not None]
    rows = []
    for name in fields_by_name():
        if name == Setting.run_name or not known:
            continue
        values = [getattr(config, name) for config in known]
        if any(value != values[0] for value in values[1:]):
            rows.append((name, tuple(None if config is None else getattr(config, name) for config in configs)))
    return rows


def train_again_config(run: ComparedRun) -> RunConfig:
    """The run's settings for a new run: the same in everything but the name (a new folder is made)."""
    if run.config is None:
        raise JobError(msg("compare.no_config", run=run.name), str(run.path / "config.yaml"),
                       msg("compare.no_config_fix"))
    return run.config.replace(**{Setting.run_name: ""})


# --- results -----------------------------------------------------------------------------------------
def run_summary(run: ComparedRun) -> dict[str, Any]:
    """What a run's events say, one value per SUMMARY name (None where it has none)."""
    progress = [e for e in run.events if isinstance(e, Progress)]
    losses = [e.loss for e in progress if e.loss is not None]
    evaluations = [e for e in run.events if isinstance(e, Evaluation)]
    best = min(evaluations, key=lambda e: e.eval_loss, default=None)
    stop = next((e for e in reversed(run.events) if isinstance(e, EarlyStopped)), None)
    speeds = [e.tokens_per_second for e in progress if e.tokens_per_second]
    return {"status": run.status,
            "steps": (progress[-1].step, progress[-1].total_steps) if progress else None,
            "final_loss": losses[-1] if losses else None,
            "best_eval_loss": best.eval_loss if best else None,
            "best_step": best.step if best else None,
            "early_stop": stop.step if stop else None,
            "tokens_per_second": speeds[-1] if speeds else None,
            "train_time": training_time(progress) if progress else None}


def training_time(progress: Sequence[Progress]) -> float:
    """Seconds trained over all sessions: each resume starts its clock again."""
    total, last = 0.0, 0.0
    for event in progress:
        if event.elapsed < last:  # a new session
            total += last
        last = event.elapsed
    return total + last


def metrics_table(runs: Sequence[ComparedRun]) -> list[tuple[str, tuple]]:
    """(metric, (value per run)): the SUMMARY of each run's events, then every metric any metrics.json
    holds, in the order first met (None where a run has none)."""
    summaries = [run_summary(run) for run in runs]
    rows = [(name, tuple(summary[name] for summary in summaries)) for name in SUMMARY]
    extra = dict.fromkeys(key for run in runs for key in run.metrics)
    rows += [(key, tuple(run.metrics.get(key) for run in runs)) for key in extra]
    return rows


def read_metrics(run_dir: Path, prefer: Sequence[str] = ()) -> dict[str, Any]:
    """metrics.json of a run, flat: {"base.chrf": 12.5, "tuned": "checkpoint-40", "tuned.chrf": 41.2, ...}.

    An evaluation's file (evaluation.py) keys each evaluated model's numbers by its name under
    "checkpoints", base first, checkpoints by step: the base model's numbers become "base.<metric>",
    and those of one adapter "tuned.<metric>" (its name: "tuned"), so runs whose checkpoints have
    different names still line up. That adapter is the first of `prefer` that was evaluated, else the
    last one. Any other mapping is flattened as it is ("a.b.c"). Lists (samples, answers) are left
    out; a missing, half-written or odd file gives {}.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        if not path.is_file() or path.stat().st_size > METRICS_MAX_BYTES:
            return {}
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # half-written, not UTF-8, not JSON
        return {}
    if not isinstance(values, dict):
        return {}
    evaluated = values.get("checkpoints")
    if not isinstance(evaluated, Mapping):
        return flatten(values)
    flat = {}
    tuned = [name for name in evaluated if name != BASE and isinstance(evaluated[name], Mapping)]
    if isinstance(evaluated.get(BASE), Mapping):
        flat.update(flatten(evaluated[BASE], f"{BASE}."))
    if tuned:
        shown = next((name for name in prefer if name in tuned), tuned[-1])
        flat[TUNED] = str(shown)
        flat.update(flatten(evaluated[shown], f"{TUNED}."))
    return {key: value for key, value in flat.items() if key.rpartition(".")[2] != "step"}  # the name says it


def flatten(values: Mapping, prefix: str = "", depth: int = NESTING) -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth > 1:
            flat.update(flatten(value, f"{name}.", depth - 1))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float)) and math.isfinite(value):
            flat[name] = value
        elif isinstance(value, str) and len(value) <= 80:
            flat[name] = value
    return flat
