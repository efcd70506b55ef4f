"""A model's own Python code runs only when the user consents, in this session, never because a file says so.

Some models ship Python files (configuration_*.py, modeling_*.py, tokenization_*.py) that their
config.json or tokenizer_config.json names in `auto_map`. transformers imports them only when it is
passed `trust_remote_code=True`, and importing them runs whatever they hold. That consent is a keyword
argument of every loader, default False, set only by the CLI's `--trust-remote-code` flag or the
studio's checkbox: no run folder, preset or `--set` can give it (config.RETIRED_KEYS drops the old
setting). Without consent transformers runs nothing and refuses such a model; this module turns that
refusal into a message saying the model ships its own code, which files, and how to opt in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .errors import ModelError
from .i18n import msg

CONFIG_FILES = ("config.json", "tokenizer_config.json")


def code_files(path: Path, model_config: Mapping | None = None) -> list[str]:
    """The Python files a model folder's `auto_map` entries point at (what consent would let run)."""
    files: set[str] = set()
    for name in CONFIG_FILES:
        values = model_config if name == "config.json" and model_config is not None else _read_json(path / name)
        for target in _auto_map_targets(values):
            module = target.split("--")[-1].rpartition(".")[0]  # "repo--module.Class" names another repo
            if module:
                files.add(module.replace(".", "/") + ".py")
    return sorted(files)


def _read_json(file: Path) -> Mapping:
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, Mapping) else {}


def _auto_map_targets(values: Mapping) -> list[str]:
    auto_map = values.get("auto_map") if isinstance(values, Mapping) else None
    if not isinstance(auto_map, Mapping):
        return []
    targets = []
    for value in auto_map.values():  # a tokenizer's entry is [slow class, fast class], either may be None
        targets += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    return targets


def model_needs_code(model_config: Mapping) -> bool:
    """True when only the model's own code can build it: it names code and transformers lacks its type.

    A known type with an `auto_map` (many hub models keep one) loads with transformers' own classes.
    """
    if not _auto_map_targets(model_config):
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return model_config.get("model_type") not in CONFIG_MAPPING


def is_refusal(exc: BaseException) -> bool:
    """transformers' own refusal to run a model's code without trust_remote_code=True."""
    return isinstance(exc, ValueError) and "trust_remote_code" in str(exc)


def refusal(path: Path, model_config: Mapping | None = None) -> ModelError:
    """The error for a model whose code would have to run while the user has not consented."""
    files = code_files(path, model_config)
    return ModelError(msg("models.remote_code_needed", files=", ".join(files) or "*.py"), str(path),
                      msg("models.remote_code_opt_in"))


def require_consent(path: Path, model_config: Mapping, trust_remote_code: bool) -> None:
    """Refuse before loading anything when the model cannot be built without its own code."""
    if not trust_remote_code and model_needs_code(model_config):
        raise refusal(path, model_config)
