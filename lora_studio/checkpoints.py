"""Checkpoints that exist only when whole: a crash or a full disk mid-save never leaves a torn one to resume.

transformers' Trainer writes `checkpoint-N` file by file, straight into place: a `kill -9` or a full
disk half-way leaves a folder that looks like a checkpoint and is not one. Here the Trainer writes each
checkpoint into `checkpoints/.saving/checkpoint-N`; once every rank has written its part the folder is
flushed to disk and renamed into `checkpoints/`, one atomic step. Rotation (`save_total_limit`) then
removes only whole, older checkpoints, so the newest whole checkpoint is never deleted (nor, with early
stopping, the best one: the Trainer loads it back at the end).

A folder left by a crash (or by a version of LoRA Studio before this) is recognised by its contents
(`is_complete`), ignored by `runs.latest_checkpoint`/`adapter_dirs`, and `set_aside_torn` moves it to
`checkpoints/torn-<name>-<time>`: never deleted, so nothing is lost without the user's say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
STAGING = ".saving"              # checkpoints/.saving/checkpoint-N while it is being written
DELETING = ".deleting-"          # a checkpoint rotation is removing (renamed first: never half a checkpoint)
TORN = "torn-"                   # what set_aside_torn moved away
ADAPTER_STAGING = ".adapter-saving"
ADAPTER_OLD = ".adapter-old"
# What Trainer._save_checkpoint writes for a LoRA model (plus tokenizer files and rng_state[_rank].pth);
# trainer_state.json comes last, so a readable one means every file before it was written whole.
CHECKPOINT_FILES = ("adapter_config.json", "adapter_model.safetensors", "training_args.bin", "optimizer.pt",
                    "scheduler.pt", "trainer_state.json")
TRAINER_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "trainer_state.json",
                "training_args.bin")  # what a checkpoint holds beyond the adapter and its tokenizer


def checkpoint_number(path: Path) -> int | None:
    """N of a folder named checkpoint-N; None for any other name."""
    found = CHECKPOINT_NAME.fullmatch(Path(path).name)
    return int(found.group(1)) if found else None


def is_complete(checkpoint: Path) -> bool:
    """Whether a checkpoint folder holds everything a resume needs, each file whole."""
    checkpoint = Path(checkpoint)
    step = checkpoint_number(checkpoint)
    if step is None or not checkpoint.is_dir():
        return False
    if not all(_nonempty(checkpoint / name) for name in CHECKPOINT_FILES):
        return False
    rng_states = list(checkpoint.glob("rng_state*.pth"))  # one per rank
    pickled = [checkpoint / name for name in CHECKPOINT_FILES if name.endswith((".pt", ".bin"))] + rng_states
    if not rng_states or not all(_zip_whole(p) for p in pickled):  # torch.save writes a zip archive
        return False
    state = _read_json(checkpoint / "trainer_state.json")
    return isinstance(state, dict) and state.get("global_step") == step and adapter_is_complete(checkpoint)


def adapter_is_complete(folder: Path) -> bool:
    """Whether a folder holds a loadable LoRA adapter: its config and whole weights."""
    return isinstance(_read_json(Path(folder) / "adapter_config.json"), dict) and \
        safetensors_whole(Path(folder) / "adapter_model.safetensors")


def safetensors_whole(file: Path) -> bool:
    """A .safetensors file whose header parses and whose size is exactly what the header says."""
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or 8 + length > size:
                return False
            header = json.loads(handle.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False
    return 8 + length + max(ends, default=0) == size


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The whole checkpoints in a run's checkpoints/ folder, oldest first."""
    folder = Path(checkpoints_dir)
    found = [p for p in folder.glob("checkpoint-*") if checkpoint_number(p) is not None] if folder.is_dir() else []
    return sorted((p for p in found if is_complete(p)), key=checkpoint_number)


def set_aside_torn(run_dir: Path) -> list[Path]:
    """Move every torn checkpoint of a run (and a half-saved final adapter) to checkpoints/torn-...; returns
    where each went. Leftovers of a rotation or of an adapter swap, which are older copies of whole
    checkpoints, are finished off."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    torn = [p for p in (folder / STAGING).glob("checkpoint-*") if p.is_dir()]
    torn += [p for p in folder.glob("checkpoint-*") if p.is_dir() and not is_complete(p)]
    if (run_dir / ADAPTER_STAGING).is_dir():
        torn.append(run_dir / ADAPTER_STAGING)
    moved = [set_aside(path, folder) for path in torn]
    for leftover in [*folder.glob(DELETING + "*"), run_dir / ADAPTER_OLD]:
        shutil.rmtree(leftover, ignore_errors=True)
    return moved


def set_aside(path: Path, folder: Path) -> Path:
    """Rename `path` into `folder` as torn-<name>-<time>, a name nothing reads as a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{TORN}{path.name.lstrip('.')}-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = folder / base, 1
    while target.exists():
        n += 1
        target = folder / f"{base}-{n}"
    os.replace(path, target)
    return target


def publish(staged: Path, final: Path) -> Path:
    """Flush a fully written folder to disk and rename it to its final name (atomic on one filesystem)."""
    for file in staged.iterdir():
        _fsync(file)
    _fsync(staged)
    if final.exists():  # a leftover under the same name cannot be whole (it would have been resumed from)
        set_aside(final, final.parent)
    os.replace(staged, final)
    _fsync(final.parent)
    return final


def rotate(checkpoints_dir: Path, limit: int | None, keep: Path | None = None) -> None:
    """Keep the newest `limit` whole checkpoints (None or 0: all) and `keep` (the best, when early stopping
    watches the validation loss: then the newest `limit - 1` besides it); an older one is renamed, then removed."""
    if not limit or limit <= 0:
        return
    whole = complete_checkpoints(checkpoints_dir)
    protected = {whole[-1], Path(keep)} if whole and keep is not None else set(whole[-1:])
    excess = len(whole) - max(limit, len(protected & set(whole)))
    for old in [c for c in whole if c not in protected][:max(excess, 0)]:
        doomed = old.with_name(DELETING + old.name)
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def save_adapter(model, tokenizer, run_dir: Path) -> Path:
    """The run's final adapter/ (and tokenizer), written beside it and swapped in whole."""
    def write(staged: Path) -> None:
        model.save_pretrained(str(staged))
        tokenizer.save_pretrained(str(staged))

    return _swap_in_adapter(Path(run_dir), write)


def adapter_from_checkpoint(checkpoint: Path, run_dir: Path) -> Path:
    """The final adapter/ as the checkpoint of the run's last step holds it (a crash came before adapter/)."""
    return _swap_in_adapter(Path(run_dir), lambda staged: shutil.copytree(
        checkpoint, staged, ignore=shutil.ignore_patterns(*TRAINER_ONLY)))


def _swap_in_adapter(run_dir: Path, write) -> Path:
    staged, final, old = run_dir / ADAPTER_STAGING, run_dir / "adapter", run_dir / ADAPTER_OLD
    write(staged)
    for file in staged.iterdir():
        _fsync(file)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)  # the same weights are in the checkpoint of this step
    os.replace(staged, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def crash_safe_trainer_class():
    """transformers' Trainer, saving each checkpoint under STAGING and publishing it once whole.

    Its loss computes the LM head only where a label is trained (loss.LogitsWhereTrained: exact)."""
    from transformers import Trainer

    from .loss import LogitsWhereTrained

    class CrashSafeTrainer(LogitsWhereTrained, Trainer):
        _staging = False

        def _get_output_dir(self, trial) -> str:
            # _save_checkpoint puts checkpoint-N under this folder: while saving, the staging one
            folder = super()._get_output_dir(trial)
            return os.path.join(folder, STAGING) if self._staging else folder

        def _save_checkpoint(self, model, trial) -> None:
            folder = Path(self._get_output_dir(trial))
            staged = folder / STAGING / f"checkpoint-{self.state.global_step}"
            self._staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = False
            self.accelerator.wait_for_everyone()  # under torchrun every rank writes its own rng state
            best = self._published_best(folder)
            if self.args.should_save:
                if best is not None:  # the state written above named the staging folder
                    self.state.save_to_json(str(staged / "trainer_state.json"))
                publish(staged, folder / staged.name)
                _remove_if_empty(staged.parent)
                rotate(folder, self.args.save_total_limit, keep=best)

        def _published_best(self, folder: Path) -> Path | None:
            """The best checkpoint (load_best_model_at_end) where it is once published, and the state's
            best_model_checkpoint pointed there; transformers looked for it in the staging folder."""
            step = self.state.best_global_step
            if not step:
                return None
            best = folder / f"checkpoint-{step}"
            found = step == self.state.global_step or is_complete(best)
            self.state.best_model_checkpoint = str(best) if found else None
            return best if found else None

    return CrashSafeTrainer


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another rank's part), or already gone
        pass


def _zip_whole(path: Path) -> bool:
    """Whether a zip archive ends with its directory (a cut-off one does not)."""
    try:
        return path.stat().st_size > 0 and zipfile.is_zipfile(path)
    except OSError:
        return False


def _nonempty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fsync(path: Path) -> None:
    """Make what was written survive a power cut too, not only a killed process.

    A file's error is the disk's (a full disk can first say so here) and goes up; a folder that cannot
    be synced, as on some systems, leaves the rename atomic all the same.
    """
    folder = path.is_dir()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not folder:
            raise
