"""The message catalogue: every string a person reads, in Chinese and English, looked up by key.

Messages live in `locale/<area>.yaml` beside this file, one file per area of the library; a key is
`<area>.<name>` (`config.not_found` is `not_found` in `locale/config.yaml`). Each entry holds a `zh`
and an `en` text with `str.format` fields. Setting labels and help come from the settings' own field
metadata (`field.<name>`, `help.<name>`), so a new setting needs no entry here.

Library code never renders text itself: it builds a `Msg` (a key and its parameters) and whoever
shows it (the CLI by `--lang` or `LANG`, the studio by the browser's language or `--lang`) calls
`render(lang)`. Names are parameters and stay as they are: model ids, file names, setting keys.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "en"  # where nothing says otherwise: a log file, a test, a machine without LANG
LOCALE_DIR = Path(__file__).with_name("locale")


def _load_catalogue(folder: Path) -> Mapping[str, Mapping[str, str]]:
    entries: dict[str, Mapping[str, str]] = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe YAML only (the C one when built)
    for path in sorted(folder.glob("*.yaml")):
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        for name, texts in document.items():
            key = f"{path.stem}.{name}"
            if not isinstance(texts, dict) or set(texts) != set(LANGUAGES):
                raise ValueError(f"{path}: '{name}' needs exactly the texts {', '.join(LANGUAGES)}")
            entries[key] = MappingProxyType({lang: str(texts[lang]) for lang in LANGUAGES})
    return MappingProxyType(entries)


CATALOGUE = _load_catalogue(LOCALE_DIR)


def _setting_entries() -> Mapping[str, Mapping[str, str]]:
    """`field.<name>` and `help.<name>` for every setting, from its dataclass field metadata."""
    import dataclasses

    from .config import RunConfig
    from .sampling import SamplingConfig

    entries = {}
    for cls in (RunConfig, SamplingConfig):
        for spec in dataclasses.fields(cls):
            meta = spec.metadata
            entries[f"field.{spec.name}"] = {"en": meta.get("label", spec.name), "zh": meta["label_zh"]}
            entries[f"help.{spec.name}"] = {"en": meta["help"], "zh": meta["help_zh"]}
    return entries


def entry(key: str) -> Mapping[str, str]:
    """Both texts of a key; an unknown key is a bug of ours and raises KeyError."""
    found = CATALOGUE.get(key)
    if found is None and key.startswith(("field.", "help.")):
        found = _setting_entries().get(key)
    if found is None:
        raise KeyError(f"no message '{key}' in the catalogue ({LOCALE_DIR})")
    return found


def keys() -> list[str]:
    """Every key: the catalogue's and the settings'."""
    return [*CATALOGUE, *_setting_entries()]


def text(key: str, lang: str, /, **params: Any) -> str:
    """The message `key` in `lang` with its parameters filled in (nested `Msg`s rendered too)."""
    template = entry(key)[lang if lang in LANGUAGES else DEFAULT_LANGUAGE]
    if not params:
        return template
    shown = {name: render(value, lang) for name, value in params.items()}
    return string.Formatter().vformat(template, (), shown)


def render(value: Any, lang: str) -> Any:
    """A `Msg` (or a list of them) as text in `lang`; anything else as it is."""
    if isinstance(value, Msg):
        return value.render(lang)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Msg) for v in value):
        return ", ".join(str(render(v, lang)) for v in value)
    return value


@dataclass(frozen=True)
class Msg:
    """A message not yet in any language: its catalogue key and parameters."""
    key: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def render(self, lang: str) -> str:
        return text(self.key, lang, **self.params)

    def __str__(self) -> str:
        return self.render(DEFAULT_LANGUAGE)

    def to_json(self) -> dict:
        """JSON-safe form for events.jsonl; `from_json` reads it back."""
        return {"key": self.key, "params": {k: v.to_json() if isinstance(v, Msg) else v
                                            for k, v in self.params.items()}}

    @classmethod
    def from_json(cls, values: Mapping) -> "Msg":
        params = {k: Msg.from_json(v) if isinstance(v, Mapping) and "key" in v and "params" in v else v
                  for k, v in (values.get("params") or {}).items()}
        kind = ErrorMsg if values["key"] == ErrorMsg.KEY else Msg
        return kind(values["key"], params)


END_MARKS = (".", "?", "!", "。", "？", "！")


@dataclass(frozen=True)
class ErrorMsg(Msg):
    """A user error as one message: 'where: what. fix.' with each language's punctuation."""
    KEY = "errors.composed"

    def render(self, lang: str) -> str:
        zh = lang == "zh"
        where, what, fix = (render(self.params.get(name) or "", lang) for name in ("where", "what", "fix"))
        parts = [f"{where}{'：' if zh else ': '}{what}" if where else what] + ([fix] if fix else [])
        return ("" if zh else " ").join(part if part.endswith(END_MARKS) else part + ("。" if zh else ".")
                                        for part in parts)


def error_msg(what: Msg, where: "Msg | str" = "", fix: Msg | None = None) -> ErrorMsg:
    return ErrorMsg(ErrorMsg.KEY, {"what": what, "where": where, "fix": fix or ""})


def msg(key: str, /, **params: Any) -> Msg:
    entry(key)  # a typo in a key fails where the message is made, not when it is shown
    return Msg(key, params)


def language_from_env(environ: Mapping[str, str] | None = None) -> str:
    """'zh' or 'en' for a command line, from LANGUAGE / LC_ALL / LC_MESSAGES / LANG (zh_CN gives zh)."""
    environ = os.environ if environ is None else environ
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = (environ.get(variable) or "").split(":")[0].strip().lower()
        if value and value not in ("c", "posix"):
            return "zh" if value.startswith("zh") else "en"
    return DEFAULT_LANGUAGE


def language_from_header(header: str) -> str:
    """'zh' or 'en' from a browser's Accept-Language header (first language we have wins)."""
    for part in (header or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE
