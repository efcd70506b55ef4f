"""Facts about the machine a run trains on: the distributed world and the precision it trains in.

One place answers "which rank am I, how many are there" (torchrun and accelerate set RANK,
WORLD_SIZE and LOCAL_RANK) and "which dtype does 'auto' mean here", for training, estimates and the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "World":
        environ = os.environ if environ is None else environ
        return cls(int(environ.get("RANK", "0")), int(environ.get("WORLD_SIZE", "1")),
                   int(environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dtype_name(setting: str) -> str:
    """The precision a run trains in on this machine: the setting, or 'auto' resolved here."""
    if setting != "auto":
        return setting
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def torch_dtype(setting: str):
    """`dtype_name(setting)` as a torch dtype."""
    import torch

    return getattr(torch, dtype_name(setting))
