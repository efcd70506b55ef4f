"""Pickle files torch will not read as plain tensors are reported as such, never opened, never a crash.

LoRA Studio reads weights from safetensors files, and from pickles (pytorch_model.bin,
adapter_model.bin, a checkpoint's optimizer.pt, scheduler.pt, rng_state.pth) only through torch's
weights-only loader: transformers 5.24, peft 0.21 and the Trainer's resume all call
`torch.load(weights_only=True)`, which rebuilds tensors and plain containers and refuses any other
object, so no code hidden in a pickle runs. A pickle of plain tensors (Index-1.9B's
pytorch_model.bin) therefore loads; one holding anything else is refused, and torch's refusal says
to turn that protection off. `explained(folder, kind)` wraps a load point and turns such a refusal
(or a damaged pickle) into a message naming the file and saying what to do instead.
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path

from .errors import ModelError, StudioError
from .i18n import msg

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# transformers' Trainer writes it (a pickled TrainingArguments) and never reads it back; neither do we
NEVER_LOADED = frozenset({"training_args.bin"})
KINDS = ("model", "adapter", "checkpoint")  # what the folder is decides what the user should do
# Where torch.load runs, as opposed to torch.save in the same file (a full disk is not a pickle problem).
SERIALIZATION_FILE, UNPICKLER_FILE = "torch/serialization.py", "torch/_weights_only_unpickler.py"
LOAD_FUNCTIONS = frozenset({"load", "_load", "_legacy_load", "persistent_load"})


@contextmanager
def explained(folder: Path | None, kind: str):
    """Around a load from `folder`: a pickle torch refused becomes a ModelError that names the file.

    `folder` None explains nothing (a fresh run has no checkpoint to resume from). Errors of writing
    (torch.save on a full disk) and every other error pass through unchanged.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    try:
        yield
    except StudioError:
        raise
    except Exception as exc:
        if folder is None or not from_torch_load(exc):
            raise
        file = refused_file(Path(folder))
        if file is None and not isinstance(exc, pickle.UnpicklingError):
            raise  # torch.load failed, but on no pickle of this folder: not ours to explain
        raise refused(file or Path(folder), kind) from None


def from_torch_load(exc: BaseException) -> bool:
    """True for an error raised while torch unpickled a file (a refusal, or a damaged file)."""
    if isinstance(exc, pickle.UnpicklingError):
        return True
    frame = exc.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        file = code.co_filename.replace("\\", "/")
        if file.endswith(UNPICKLER_FILE) or (file.endswith(SERIALIZATION_FILE) and code.co_name in LOAD_FUNCTIONS):
            return True
        frame = frame.tb_next
    return False


def refused(file: Path, kind: str) -> ModelError:
    return ModelError(msg("models.pickle_refused"), str(file), msg(f"models.pickle_fix_{kind}"))


def pickle_files(folder: Path) -> list[Path]:
    """The pickles in `folder` something may load, in name order."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in PICKLE_SUFFIXES and p.name not in NEVER_LOADED)


def refused_file(folder: Path) -> Path | None:
    """The first pickle in `folder` that torch's weights-only loader refuses, or None.

    Tensors land on the meta device, so no weights are read: checking a 4 GB file is cheap. The numpy
    types the Trainer allows for rng_state.pth are allowed here too, so its own files pass.
    """
    import torch
    from transformers.trainer_pt_utils import safe_globals

    for file in pickle_files(folder):
        try:
            with safe_globals():
                torch.load(file, map_location="meta", weights_only=True)
        except Exception:  # noqa: BLE001 - any failure to read it safely is what we report
            return file
    return None
