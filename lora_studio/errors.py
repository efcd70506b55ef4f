"""User-facing errors: every mistake a user can make becomes one of these, never a traceback.

A `StudioError` carries three parts a person can act on: what went wrong, where (a file, a record, a
config key) and what to do about it. The CLI prints `str(error)` and exits non-zero; the studio shows it.
"""

from __future__ import annotations


class StudioError(Exception):
    """An error caused by input or environment, with a message meant for the user."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(self.fix)
        return " ".join(part if part.endswith((".", "?", "!")) else part + "." for part in parts)


class ConfigError(StudioError):
    """A setting is unknown, of the wrong type or outside its allowed range."""


class DataError(StudioError):
    """A dataset file cannot be read or a record is malformed."""


class ModelError(StudioError):
    """A model or tokenizer cannot be found or loaded."""


class JobError(StudioError):
    """A training job cannot be started, stopped or resumed as asked."""


class HubError(StudioError):
    """A download from ModelScope or Hugging Face failed."""
