"""Disk space: what a run's checkpoints take, what is free, and whether an error means the disk is full.

The pre-flight estimate and a starting run compare `disk_need` with the free space; a failed run asks
`is_disk_full` so that a full disk is reported as one (where, and how much a checkpoint needs), not as
torch's "[enforce fail at inline_container.cc] unexpected pos".
"""

from __future__ import annotations

import errno
import math
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

from .errors import JobError
from .i18n import msg

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How the writers word a full disk: the OS (OSError), safetensors (Rust's io error), a quota
FULL_WORDS = ("no space left on device", "os error 28", "disk quota exceeded")
# torch's zip writer says only that a write came up short: a full disk when little space is left
SHORT_WRITE_WORDS = ("unexpected pos", "iostream error", "file write failed")
SHORT_WRITE_FREE = 1_000_000
# LoRA weights are kept in float32 (peft casts them up) and AdamW keeps two float32 moments each
ADAPTER_BYTES_PER_PARAM = 4
OPTIMIZER_BYTES_PER_PARAM = 8
CHECKPOINT_EXTRA = 40_000  # rng state, training_args.bin, scheduler, trainer_state, adapter_config, README
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


@dataclass
class DiskNeed:
    checkpoint: int          # bytes of one checkpoint
    kept: int                # checkpoints on disk at the same time, at most
    adapter: int             # bytes of the final adapter/
    free: int | None         # bytes free where the run is written (None: unknown)
    where: str

    @property
    def total(self) -> int:
        return self.checkpoint * self.kept + self.adapter

    @property
    def short(self) -> bool:
        return self.free is not None and self.free < self.total


def tokenizer_bytes(model_path: Path | None) -> int:
    """What the tokenizer files a checkpoint copies from the model folder take."""
    if model_path is None:
        return 0
    return sum(_size(Path(model_path) / name) for name in TOKENIZER_FILES)


def checkpoint_bytes(trainable: int, tokenizer: int = 0) -> int:
    """One checkpoint of a LoRA run: adapter, optimizer state, tokenizer and the Trainer's small files."""
    return (ADAPTER_BYTES_PER_PARAM + OPTIMIZER_BYTES_PER_PARAM) * trainable + tokenizer + CHECKPOINT_EXTRA


def disk_need(trainable: int, total_steps: int, save_steps: int, save_total_limit: int, tokenizer: int,
              folder: Path) -> DiskNeed:
    """The space a run of `total_steps` takes at its fullest (the Trainer also saves at the last step).

    A new checkpoint is whole before rotation removes the oldest, so `save_total_limit` L keeps L + 1
    for a moment.
    """
    saves = math.ceil(total_steps / save_steps) if total_steps > 0 else 0
    kept = min(save_total_limit + 1, saves) if save_total_limit > 0 else saves
    adapter = ADAPTER_BYTES_PER_PARAM * trainable + tokenizer + CHECKPOINT_EXTRA // 4
    return DiskNeed(checkpoint_bytes(trainable, tokenizer), kept, adapter, free_bytes(folder), str(folder))


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem that holds `path` (or would: its nearest existing parent)."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def folder_bytes(path: Path) -> int:
    """The bytes of every file under `path`."""
    path = Path(path)
    return sum(_size(p) for p in path.rglob("*")) if path.is_dir() else 0


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc` (or one it came from) says the disk holding `folder` is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        words = str(exc).lower()
        if any(word in words for word in FULL_WORDS):
            return True
        if any(word in words for word in SHORT_WRITE_WORDS):
            free = free_bytes(folder)
            return free is not None and free < SHORT_WRITE_FREE
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(folder: Path, needed: int | None, resume_run: str | None, torn: Path | None,
                    error_log: Path | None) -> JobError:
    """What a user reads when the disk filled up: where, what is free, what a checkpoint needs, how to go
    on (`resume_run`: the run to resume, None when nothing was saved yet), what was set aside, and
    whether error.log could be written."""
    from .hub_local import format_bytes

    size = format_bytes(needed) if needed else None
    return JobError(
        msg("training.disk_full", free=format_bytes(free_bytes(folder) or 0),
            needed=msg("training.disk_checkpoint", size=size) if size else ""),
        str(folder),
        msg("training.disk_full_fix",
            free=msg("training.disk_free_at_least", size=size) if size else msg("training.disk_free_some"),
            then=msg("training.disk_then_resume", run=resume_run) if resume_run else msg("training.disk_then_restart"),
            torn=msg("training.disk_torn", path=str(torn)) if torn else "",
            error_log=msg("training.disk_error_log", path=str(error_log)) if error_log
            else msg("training.disk_no_error_log")))


def release_files(exc: BaseException | None) -> None:
    """Drop the frames of a failed write: torch's writer keeps its file open from them, so the space of
    a torn checkpoint would stay taken, even once deleted, for as long as the job keeps its error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
