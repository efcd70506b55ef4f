"""The workspace: the one folder that holds a user's models, runs, presets and uploaded data.

A `Workspace` is made once by whoever starts the program (the CLI from `--workspace` or
$LORA_STUDIO_HOME, default ./workspace; a test from its temporary folder) and passed to everything
that reads or writes there. Nothing sets an environment variable to move it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

HOME_VARIABLE = "LORA_STUDIO_HOME"


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, folder: str | Path | None = None) -> "Workspace":
        """`folder` if given, else $LORA_STUDIO_HOME, else ./workspace."""
        environ = os.environ if environ is None else environ
        return cls(Path(folder or environ.get(HOME_VARIABLE) or "workspace"))

    runs = property(lambda self: self.root / "runs", doc="One folder per training run.")
    models = property(lambda self: self.root / "models", doc="Downloaded models and the demo model.")
    presets = property(lambda self: self.root / "presets", doc="Presets the user saved.")
    data = property(lambda self: self.root / "data", doc="Datasets uploaded through the studio.")

    def environ(self) -> dict[str, str]:
        """Variables for a child process (torchrun, `command.sh`) that must use this workspace."""
        return {HOME_VARIABLE: str(self.root)}
