"""Experiment trackers: the run's `report_to`, checked before it starts, and a link to the tracker's run.

    trackers.check_installed(config)          # before anything starts: the package is there, or a clear error
    TrainingArguments(**trackers.arguments(config, run_dir), ...)
    trainer = ...; trackers.place_logs(trainer)   # TensorBoard writes into run/tensorboard
    callbacks.append(trackers.link_callback(config, run_dir, emit))

Each tracker is an optional package, reported to by transformers' own integration callback. At the
start of training `link_callback` finds where the tracker shows the run (wandb's and SwanLab's run
pages, MLflow's tracking server and run id, Trackio's Space or local dashboard, TensorBoard's log
folder and the command that shows it) and emits a `TrackerLink` event, plus the same text as a log line
so the CLI prints it. Finding the link never fails a run: a tracker that changed its API gets a
general line instead.

TensorBoard's folder: transformers 5 has no `logging_dir` argument; its TensorBoardCallback reads
TENSORBOARD_LOGGING_DIR once, when the Trainer is built, and otherwise writes under output_dir/runs/.
Setting the variable would reach every later run of the process, so `place_logs` sets the callback's
own `logging_dir` on the Trainer it belongs to instead (before training, when it is read).
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from types import MappingProxyType
from typing import Callable

from .config import RunConfig, Setting
from .errors import ConfigError, first_line
from .events import Log, TrackerLink
from .i18n import Msg, msg

NONE = "none"
# tracker -> the import names that provide it (any one will do); the first is what pip installs
PACKAGES = MappingProxyType({
    "tensorboard": ("tensorboard", "tensorboardX"),
    "swanlab": ("swanlab",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "trackio": ("trackio",),
})
TENSORBOARD_FOLDER = "tensorboard"
PROJECT = "lora-studio"  # the project (wandb, SwanLab, Trackio) runs are grouped under unless the user says


def report_to(config: RunConfig) -> list[str]:
    """The Trainer's `report_to`: [] or the one tracker."""
    return [] if config.report_to == NONE else [config.report_to]


def missing_package(tracker: str) -> str | None:
    """The package to install for `tracker`, None when one that provides it is installed."""
    names = PACKAGES[tracker]
    return None if any(find_spec(name) is not None for name in names) else names[0]


def check_installed(config: RunConfig) -> None:
    """ConfigError naming the package and the pip command when the run's tracker is not installed."""
    if config.report_to == NONE:
        return
    package = missing_package(config.report_to)
    if package is not None:
        raise ConfigError(msg("hardware.tracker_missing", tracker=config.report_to, package=package),
                          Setting.report_to,
                          msg("hardware.tracker_missing_fix", command=f"{sys.executable} -m pip install {package}"))


def arguments(config: RunConfig, run_dir: Path) -> dict:
    """`TrainingArguments` keywords for the tracker: report_to, and the run named after its folder."""
    if config.report_to == NONE:
        return dict(report_to=[])
    return dict(report_to=report_to(config), run_name=Path(run_dir).name, project=PROJECT)


def tensorboard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / TENSORBOARD_FOLDER


def run_dir_of(args) -> Path:
    """The run folder of a Trainer's arguments: its output_dir is run/checkpoints (recipe.assemble_run)."""
    return Path(args.output_dir).parent


def place_logs(trainer) -> None:
    """Point the Trainer's TensorBoard callback (when it reports to TensorBoard) at run/tensorboard."""
    if "tensorboard" not in (trainer.args.report_to or []):
        return
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(tensorboard_dir(run_dir_of(trainer.args)))


# --- the link ------------------------------------------------------------------------------------
def link_callback(config: RunConfig, emit: Callable):
    """A TrainerCallback that emits the tracker's TrackerLink (and a Log line) when training begins.

    It runs after the tracker's own callback (the Trainer puts reporting callbacks first), so the
    tracker's run exists by then.
    """
    from transformers import TrainerCallback

    tracker = config.report_to

    class TrackerLinkCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            link = find_link(tracker, run_dir_of(args))
            emit(link)
            emit(Log(link.text))

    return TrackerLinkCallback()


def find_link(tracker: str, run_dir: Path) -> TrackerLink:
    """Where `tracker` shows this run: a web address when it has one, else a place and a command."""
    finders = {"tensorboard": _tensorboard, "wandb": _wandb, "swanlab": _swanlab, "mlflow": _mlflow,
               "trackio": _trackio}
    try:
        url, text = finders[tracker](run_dir)
    except Exception as exc:  # a tracker's API is not ours: an unexpected one costs the link, not the run
        url, text = "", msg("hardware.link_unknown", tracker=tracker, detail=first_line(exc))
    return TrackerLink(tracker=tracker, url=url, text=text)


def _tensorboard(run_dir: Path) -> tuple[str, Msg]:
    folder = tensorboard_dir(run_dir)
    return str(folder), msg("hardware.link_tensorboard", folder=str(folder),
                            command=f"tensorboard --logdir {_quoted(folder)}")


def _wandb(run_dir: Path) -> tuple[str, Msg]:
    import wandb

    run = wandb.run
    url = getattr(run, "url", None) or ""
    if url:
        return url, msg("hardware.link_web", tracker="wandb", url=url)
    folder = getattr(run, "dir", "") or str(run_dir / "wandb")  # offline: synced later with `wandb sync`
    return "", msg("hardware.link_wandb_offline", folder=folder)


def _swanlab(run_dir: Path) -> tuple[str, Msg]:
    import swanlab

    run = swanlab.get_run()
    url = getattr(getattr(getattr(run, "public", None), "cloud", None), "experiment_url", None) or ""
    if url:
        return url, msg("hardware.link_web", tracker="SwanLab", url=url)
    return "", msg("hardware.link_swanlab_local", command="swanlab watch")


def _mlflow(run_dir: Path) -> tuple[str, Msg]:
    import mlflow

    run, uri = mlflow.active_run(), mlflow.get_tracking_uri()
    run_id = run.info.run_id if run is not None else "?"
    if uri.startswith(("http://", "https://")) and run is not None:
        url = f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        return url, msg("hardware.link_web", tracker="MLflow", url=url)
    return "", msg("hardware.link_mlflow_local", run_id=run_id,
                   command=f"mlflow ui --backend-store-uri {_quoted(uri)}")


def _trackio(run_dir: Path) -> tuple[str, Msg]:
    import trackio

    space = trackio.context_vars.current_space_id.get()
    if space:
        url = f"https://huggingface.co/spaces/{space}"
        return url, msg("hardware.link_web", tracker="Trackio", url=url)
    return "", msg("hardware.link_trackio_local", command=f"trackio show --project {PROJECT}")


def _quoted(value) -> str:
    import shlex

    return shlex.quote(str(value))
