"""User-facing errors: every mistake a user can make becomes one of these, never a traceback.

A `StudioError` carries three parts a person can act on: what went wrong, where (a file, a record, a
setting key) and what to do about it. What and fix are catalogue messages (`i18n.msg(...)`), so the
CLI and the studio show them in the user's language; where is a name (a path, a key) or a message.

    raise DataError(msg("data.not_found"), str(path), msg("data.not_found_fix"))

`first_line(exc)` is the one way to quote an exception that is not ours in a message.
"""

from __future__ import annotations

import os
from typing import Union

from .i18n import DEFAULT_LANGUAGE, Msg, error_msg, msg

Text = Union[Msg, str]
DEBUG_VARIABLE = "LORA_STUDIO_DEBUG"


class StudioError(Exception):
    """An error caused by input or environment, with a message meant for the user."""

    def __init__(self, what: Msg, where: Text = "", fix: Msg | None = None):
        if not isinstance(what, Msg) or not (fix is None or isinstance(fix, Msg)):
            raise TypeError("StudioError takes catalogue messages (i18n.msg) for what and fix")
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    def render(self, lang: str) -> str:
        """The whole message in `lang`: 'where: what. fix.'"""
        return self.to_msg().render(lang)

    @property
    def message(self) -> str:
        return self.render(DEFAULT_LANGUAGE)

    def to_msg(self) -> Msg:
        """The error as one message (an event in events.jsonl keeps it, to show later in any language)."""
        return error_msg(self.what, self.where, self.fix)


class ConfigError(StudioError):
    """A setting is unknown, of the wrong type or outside its allowed range."""


class DataError(StudioError):
    """A dataset file cannot be read or a record is malformed."""


class ModelError(StudioError):
    """A model or tokenizer cannot be found or loaded."""


class JobError(StudioError):
    """A job (training, download) cannot be started, stopped or resumed as asked."""


class HubError(StudioError):
    """A download from ModelScope or Hugging Face failed."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines and lines[0] else type(exc).__name__


def debugging(environ=None) -> bool:
    """LORA_STUDIO_DEBUG=1: show the traceback of every error, ours included."""
    return bool((os.environ if environ is None else environ).get(DEBUG_VARIABLE))


def error_kind(exc: BaseException) -> str:
    """The catalogue key of a heading for this error: by its kind, or 'internal' for a bug."""
    for kind, key in ((ConfigError, "config"), (DataError, "data"), (ModelError, "model"), (JobError, "job"),
                      (HubError, "hub")):
        if isinstance(exc, kind):
            return f"errors.title_{key}"
    return "errors.title_other" if isinstance(exc, StudioError) else "errors.title_internal"


def describe(exc: BaseException) -> Msg:
    """What a user reads for any exception: a StudioError's message, or a short internal-error line."""
    if isinstance(exc, StudioError):
        return exc.to_msg()
    return msg("errors.internal", type=type(exc).__name__, first_line=first_line(exc))
