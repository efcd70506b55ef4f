"""What a resumed run may change, one rule for the CLI's `train --resume RUN` and the studio.

A resume continues the Trainer's saved state: the optimizer, the scheduler, the data order and the
position in it. Only settings the Trainer reads afresh when it continues can change: how long to
train, and how often to log and save. Anything else (learning rate, batch size, LoRA shape, data)
would be ignored by the saved state or break it, so it is refused with the setting's name; an
invalid value is an error as it would be for a new run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .config import RunConfig, Setting, fields_by_name, from_dict, load_yaml
from .errors import ConfigError, JobError
from .i18n import msg
from .runs import resolved_config

RESUMABLE_SETTINGS = (Setting.max_steps, Setting.num_train_epochs, Setting.logging_steps, Setting.save_steps,
                      Setting.save_total_limit)


def saved_config(run_dir: Path) -> RunConfig:
    """The settings a run folder was trained with (its config.yaml)."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise JobError(msg("training.not_a_run"), str(run_dir), msg("training.not_a_run_fix"))
    return load_yaml(Path(run_dir) / "config.yaml")


def overrides_from_config(saved: RunConfig, given: RunConfig) -> dict:
    """The settings in which a whole config (a preset, a form) differs from a run's saved ones.

    No run name (a preset's, a form's) and the data files' spelling (relative or absolute) are not
    differences.
    """
    given = resolved_config(given, given.run_name or saved.run_name)
    return {key: value for key, value in given.to_dict().items() if getattr(saved, key) != value}


def resume_changes(saved: RunConfig, overrides: Mapping, step: int, where: str = "--set") -> tuple[RunConfig, dict]:
    """(the config to continue with, {setting: (was, now)}) for a resume at `step` with `overrides`."""
    config = from_dict({**saved.to_dict(), **dict(overrides)}, where=where)
    changes = {key: (getattr(saved, key), getattr(config, key)) for key in fields_by_name()
               if key in overrides and getattr(saved, key) != getattr(config, key)}
    refused = [key for key in changes if key not in RESUMABLE_SETTINGS]
    if refused:
        raise ConfigError(msg("training.resume_refused", names=", ".join(refused)), refused[0],
                          msg("training.resume_refused_fix", allowed=", ".join(RESUMABLE_SETTINGS)))
    if Setting.max_steps in changes and 0 < config.max_steps <= step:
        raise ConfigError(msg("training.resume_max_steps", value=config.max_steps, step=step), Setting.max_steps,
                          msg("training.resume_max_steps_fix", step=step))
    if Setting.num_train_epochs in changes and config.max_steps > 0:
        raise ConfigError(msg("training.resume_epochs_ignored", steps=config.max_steps), Setting.num_train_epochs,
                          msg("training.resume_epochs_ignored_fix"))
    return config, changes
