"""The model catalog: the models LoRA Studio offers by name and what to know before picking one.

The facts live in catalog.yaml next to this file (its header says how the memory figures were
estimated); this module reads them into `CatalogEntry` objects for the CLI and the studio's model picker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from .errors import ConfigError, first_line
from .i18n import msg

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    name: str
    modelscope_id: str  # empty for the built-in demo model
    huggingface_id: str
    parameters: int
    download_size_gb: float
    train_memory_gb_bf16: float  # estimated peak GPU memory for LoRA at the Zhen Huan preset's settings
    needs_remote_code: bool
    template: str  # the RunConfig `template` to train with
    licence: str      # English; licence_zh is the same in Chinese
    licence_zh: str
    notes_en: str
    notes_zh: str

    @property
    def parameters_label(self) -> str:
        """2_172_819_456 -> '2.17B', 494_032_768 -> '494M'."""
        if self.parameters >= 10**9:
            return f"{self.parameters / 1e9:.2f}B"
        return f"{self.parameters / 1e6:.3g}M"

    def hub_id(self, source: str = "modelscope") -> str:
        return self.modelscope_id if source == "modelscope" else self.huggingface_id

    def notes(self, lang: str) -> str:
        """What to know before picking this model, in `lang` ('zh' or 'en')."""
        return self.notes_zh if lang == "zh" else self.notes_en

    def licence_text(self, lang: str) -> str:
        return self.licence_zh if lang == "zh" else self.licence


_TYPES = MappingProxyType({f.name: f.type for f in dataclasses.fields(CatalogEntry)})
_CASTS = MappingProxyType({"str": str, "int": int, "float": float, "bool": bool})


def load_catalog(path: str | Path = CATALOG_FILE) -> list[CatalogEntry]:
    """Every catalog entry, in file order; a malformed entry is a ConfigError naming file, entry and key."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(msg("catalog.unreadable", detail=first_line(exc)), str(path),
                          msg("catalog.unreadable_fix")) from None
    entries = []
    for number, raw in enumerate(document.get("models") or [], start=1):
        where = msg("catalog.where_entry", path=str(path), number=number,
                    key=raw.get("key", "?") if isinstance(raw, dict) else "?")
        if not isinstance(raw, dict):
            raise ConfigError(msg("catalog.not_a_mapping"), where)
        unknown = sorted(set(raw) - set(_TYPES))
        missing = sorted(set(_TYPES) - set(raw))
        if unknown or missing:
            what = (msg("catalog.unknown_keys", keys=unknown) if unknown
                    else msg("catalog.missing_keys", keys=missing))
            raise ConfigError(what, where, msg("catalog.keys_fix", keys=", ".join(_TYPES)))
        values = {}
        for key, value in raw.items():
            expected = _CASTS[_TYPES[key]]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if value is None and expected is str:
                value = ""
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(msg("catalog.wrong_type", key=key, expected=_TYPES[key],
                                      found=type(value).__name__), where)
            values[key] = value.strip() if isinstance(value, str) else value
        entries.append(CatalogEntry(**values))
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise ConfigError(msg("catalog.duplicate_key"), str(path), msg("catalog.duplicate_key_fix"))
    return entries


def find_entry(name: str, catalog: list[CatalogEntry] | None = None) -> CatalogEntry | None:
    """The entry whose key, ModelScope id or Hugging Face id is `name` (case-insensitive), else None."""
    wanted = name.strip().lower()
    for entry in catalog if catalog is not None else load_catalog():
        if wanted and wanted in {entry.key.lower(), entry.modelscope_id.lower(), entry.huggingface_id.lower()}:
            return entry
    return None
