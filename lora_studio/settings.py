"""What a setting is, for every settings dataclass (RunConfig, SamplingConfig): metadata and checking.

`setting(...)` builds a field's metadata: its group, label and help in both languages, bounds, and
how it is typed in (`kind`) and shown (`widget`, `lines`, `suggestions`). The CLI, the studio's
widgets, YAML and the API all read these facts; no other module spells a setting's name.

Kinds beyond the field's Python type:
- `paths`: one path or a list of them (YAML list, a string, or one path a line in a widget);
- `modules`: 'all-linear' or a list of module names (a comma-separated string works too);
- `mapping`: a YAML mapping of names to plain values (a widget shows it as one line of YAML);
- `lines`: a list of short texts, possibly empty (YAML list, or one text a line in a widget);
- `free_text`: taken exactly as typed on the command line, never read as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

import yaml

from .errors import ConfigError
from .i18n import msg


def setting(group: str, help: str, help_zh: str, label_zh: str, **facts: Any) -> dict:
    """Field metadata: group, bilingual help and label, and optional facts.

    Facts: `label` (English label; default the field name), `min`, `max`, `choices`, `step`, `kind`
    (paths | modules | free_text), `widget` (slider | dropdown), `lines` (a multi-line box),
    `suggestions` (choices offered while any value may be typed), `pace` (the setting decides how
    long a step takes, so a past run with the same value times a new one).
    """
    return {"group": group, "help": help, "help_zh": help_zh, "label_zh": label_zh, **facts}


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def default_of(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None


def check_mapping(cls, values: dict, where: str) -> dict:
    """Clean values for `cls(**values)`: unknown keys name the closest known one, each value is checked."""
    if not isinstance(values, dict):
        raise ConfigError(msg("config.not_a_mapping"), where)
    known = fields_of(cls)
    clean = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = msg("config.did_you_mean", name=close[0]) if close else msg("config.see_help")
            raise ConfigError(msg("config.unknown_key", key=key), where, hint)
        clean[key] = check_value(key, value, known[key], where)
    return clean


def check_value(name: str, value: Any, spec: dataclasses.Field, where: str) -> Any:
    """Coerce a YAML, CLI or widget value to the field's type and check its bounds; return it clean."""
    meta, default = spec.metadata, default_of(spec)
    kind = meta.get("kind")
    if kind == "modules":
        return _check_modules(name, value, where)
    if kind == "paths":
        return _check_paths(name, value, where)
    if kind == "mapping":
        return _check_mapping_value(name, value, where)
    if kind == "lines":
        return _check_lines(name, value, where)
    choices = meta.get("choices")
    if choices is not None:
        if isinstance(value, str) and value.lower() in ("true", "false") and True in choices:
            value = value.lower() == "true"
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ConfigError(msg("config.not_a_choice", key=name, value=repr(value),
                                  choices=", ".join(map(str, choices))), where)
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(msg("config.not_a_bool", key=name, value=repr(value)), where)
        return value
    if isinstance(default, (int, float)):
        return _check_number(name, value, default, meta, where)
    if isinstance(default, str):
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ConfigError(msg("config.not_text", key=name, value=repr(value)), where)
        return value
    return value


def _check_number(name: str, value: Any, default: Any, meta: dict, where: str) -> Any:
    if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as text
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(msg("config.not_a_number", key=name, value=repr(value)), where)  # nan passes < and >
    if isinstance(default, int):
        if value != int(value):
            raise ConfigError(msg("config.not_whole", key=name, value=repr(value)), where)
        value = int(value)
    else:
        value = float(value)
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(msg("config.out_of_range", key=name, value=repr(value), min="-∞" if lo is None else lo,
                              max="∞" if hi is None else hi), where)
    return value


def _check_paths(name: str, value: Any, where: str) -> list:
    if isinstance(value, str):
        value = [line.strip() for line in value.splitlines() if line.strip()] if "\n" in value else [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(msg("config.not_paths", key=name), where, msg("config.not_paths_fix", key=name))
    return value


def _check_lines(name: str, value: Any, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(msg("config.not_lines", key=name), where, msg("config.not_lines_fix", key=name))
    return [v.strip() for v in value if v.strip()]


def _check_modules(name: str, value: Any, where: str) -> Any:
    if isinstance(value, str):
        if value.strip() == "all-linear":
            return "all-linear"
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(msg("config.not_modules", key=name), where, msg("config.not_modules_fix", key=name))
    return value


def _check_mapping_value(name: str, value: Any, where: str) -> dict:
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):  # typed in a widget or on the command line
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(msg("templates.kwargs_not_mapping", key=name), where,
                          msg("templates.kwargs_not_mapping_fix", key=name,
                              example="{enable_thinking: false}"))
    return dict(value)


def widget_text(spec: dataclasses.Field, value: Any) -> Any:
    """A value as a form shows it: paths one a line, modules comma-separated, choices as text."""
    kind = spec.metadata.get("kind")
    if kind in ("paths", "lines"):
        return "\n".join(value)
    if kind == "modules":
        return value if isinstance(value, str) else ", ".join(value)
    if kind == "mapping":
        return yaml.safe_dump(dict(value), default_flow_style=True, allow_unicode=True).strip() if value else ""
    if spec.metadata.get("choices") is not None and isinstance(value, bool):
        return str(value).lower()
    return value


def from_widget_text(spec: dataclasses.Field, value: Any) -> Any:
    """A form's value back to what `check_value` takes (it checks it then)."""
    kind, default = spec.metadata.get("kind"), default_of(spec)
    if kind in ("paths", "lines"):
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if kind in ("modules", "mapping"):
        return str(value or "").strip()
    if spec.metadata.get("choices") is not None and True in spec.metadata["choices"]:
        return {"true": True, "false": False}.get(str(value).lower(), value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        return int(value) if value == int(value) else value  # a number widget may hand back 8.0
    return value
