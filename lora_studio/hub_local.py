"""The models already in a workspace: where a download goes, whether a folder is a loadable model.

Shared by the downloader (the check after a download), the `models` command and the studio's model
list. Nothing here touches the network or imports a hub client. What a folder lacks is a list of
catalogue messages, so each front end shows it in its user's language.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HubError
from .i18n import Msg, msg
from .models import hub_folder_name
from .workspace import Workspace

# Any one of these makes a tokenizer AutoTokenizer can load (vocab.json also needs merges.txt).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PARTIAL_SUFFIX = ".incomplete"  # what the ModelScope client calls a file it has not finished


@dataclass
class LocalModel:
    name: str  # what to type as the model setting: 'demo-tiny' or 'Qwen/Qwen2.5-0.5B-Instruct'
    path: Path
    size: int  # bytes on disk
    complete: bool
    missing: list[Msg] = field(default_factory=list)

    def missing_text(self, lang: str) -> str:
        return missing_text(self.missing, lang)


def missing_text(missing: list[Msg], lang: str) -> str:
    """What a folder lacks, as one line in `lang`."""
    return missing_msg(missing).render(lang) if missing else ""


def missing_msg(missing: list[Msg]) -> Msg:
    """The items as one message, 'a; b; c', nested pairwise so an event file can keep it as it is."""
    joined = missing[-1]
    for item in reversed(missing[:-1]):
        joined = msg("hub.missing_join", first=item, rest=joined)
    return joined


def model_folder(model_id: str, workspace: Workspace) -> Path:
    """The workspace folder a hub id downloads into: models/<owner>--<name>, never anywhere else."""
    root = workspace.models.resolve()
    folder = (root / hub_folder_name(model_id)).resolve()
    if folder.parent != root:
        raise HubError(msg("hub.bad_folder_name"), model_id, msg("hub.bad_id_fix"))
    return folder


def display_name(folder: Path) -> str:
    """The id a workspace folder was downloaded from ('Qwen--Qwen3-0.6B' -> 'Qwen/Qwen3-0.6B')."""
    return folder.name.replace("--", "/", 1) if "--" in folder.name else folder.name


def check_model_folder(path: str | Path) -> list[Msg]:
    """What a folder lacks to load as a causal LM with its tokenizer; an empty list means loadable."""
    path = Path(path)
    if not path.is_dir():
        return [msg("hub.missing_folder", path=str(path))]
    missing = []
    if not (path / "config.json").is_file():
        missing.append(msg("hub.missing_file", name="config.json"))
    has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
    if (path / "vocab.json").is_file() and not (path / "tokenizer.json").is_file():
        has_tokenizer = (path / "merges.txt").is_file()
    if not has_tokenizer:
        missing.append(msg("hub.missing_tokenizer"))
    missing.extend(_missing_weights(path))
    partial = sorted(p.relative_to(path).as_posix() for p in path.rglob("*" + PARTIAL_SUFFIX))
    missing.extend(msg("hub.missing_partial", name=name[:-len(PARTIAL_SUFFIX)]) for name in partial)
    return missing


def _missing_weights(path: Path) -> list[Msg]:
    for index_name in WEIGHT_INDEXES:
        index = path / index_name
        if index.is_file():
            shards = _index_shards(index)
            if shards is None:
                return [msg("hub.missing_index", name=index_name)]
            return [msg("hub.missing_shard", name=shard) for shard in shards if not (path / shard).is_file()]
    weights = [p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)
               if p.name != "training_args.bin"]
    return [] if weights else [msg("hub.missing_weights")]


def _index_shards(index: Path) -> list[str] | None:
    """The shard files a weights index names, or None when it is not a readable index."""
    try:
        document = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable or not JSON (UnicodeDecodeError is a ValueError)
        return None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return None
    return sorted(set(weight_map.values()))


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_local_models(workspace: Workspace) -> list[LocalModel]:
    """Every model folder under the workspace's models/, sorted by name, with what each still lacks."""
    root = workspace.models
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        missing = check_model_folder(folder)
        found.append(LocalModel(display_name(folder), folder, folder_size(folder), not missing, missing))
    return found


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB'; decimal units, as the hubs and disk tools print sizes (units read the same in zh)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
