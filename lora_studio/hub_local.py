"""The models already in the workspace: where a download goes, whether a folder is a loadable model.

Shared by the downloader (the check after a download), the `models` command and the studio's model
list. Nothing here touches the network or imports a hub client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import workspace
from .errors import HubError
from .models import hub_folder_name

# Any one of these makes a tokenizer AutoTokenizer can load (vocab.json also needs merges.txt).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PARTIAL_SUFFIX = ".incomplete"  # what the ModelScope client calls a file it has not finished


@dataclass
class LocalModel:
    name: str  # what to type as model_name_or_path: 'demo-tiny' or 'Qwen/Qwen2.5-0.5B-Instruct'
    path: Path
    size: int  # bytes on disk
    complete: bool
    missing: list[str] = field(default_factory=list)


def models_dir() -> Path:
    return workspace() / "models"


def model_folder(model_id: str) -> Path:
    """The workspace folder a hub id downloads into: models/<owner>--<name>, never anywhere else."""
    root = models_dir().resolve()
    folder = (root / hub_folder_name(model_id)).resolve()
    if folder.parent != root:
        raise HubError("this model id cannot be turned into a folder name", model_id,
                       "Use an id of the form owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct.")
    return folder


def display_name(folder: Path) -> str:
    """The id a workspace folder was downloaded from ('Qwen--Qwen3-0.6B' -> 'Qwen/Qwen3-0.6B')."""
    return folder.name.replace("--", "/", 1) if "--" in folder.name else folder.name


def check_model_folder(path: str | Path) -> list[str]:
    """What a folder lacks to load as a causal LM with its tokenizer; an empty list means loadable."""
    path = Path(path)
    if not path.is_dir():
        return [f"the folder itself ({path})"]
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
    if (path / "vocab.json").is_file() and not (path / "tokenizer.json").is_file():
        has_tokenizer = (path / "merges.txt").is_file()
    if not has_tokenizer:
        missing.append("tokenizer files (tokenizer.json, tokenizer.model, or vocab.json with merges.txt)")
    missing.extend(_missing_weights(path))
    partial = sorted(p.relative_to(path).as_posix() for p in path.rglob("*" + PARTIAL_SUFFIX))
    missing.extend(f"unfinished download {name[:-len(PARTIAL_SUFFIX)]}" for name in partial)
    return missing


def _missing_weights(path: Path) -> list[str]:
    for index_name in WEIGHT_INDEXES:
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                return [f"a readable {index_name}"]
            return [f"weights shard {shard}" for shard in shards if not (path / shard).is_file()]
    weights = [p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)
               if p.name != "training_args.bin"]
    return [] if weights else ["weights (*.safetensors or *.bin)"]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_local_models() -> list[LocalModel]:
    """Every model folder under the workspace's models/, sorted by name, with what each still lacks."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        missing = check_model_folder(folder)
        found.append(LocalModel(display_name(folder), folder, folder_size(folder), not missing, missing))
    return found


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB'; decimal units, as the hubs and disk tools print sizes."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
