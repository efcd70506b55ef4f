"""The workspace: the one folder that holds a user's models, runs, presets and uploaded data.

A `Workspace` is made once by whoever starts the program (the CLI from `--workspace` or
$LORA_STUDIO_HOME, default ./workspace; a test from its temporary folder) and passed to everything
that reads or writes there. Nothing sets an environment variable to move it. `ensure_writable` is
what a command that writes there (training, downloads, the studio) calls first, so a workspace that is
a file, read-only or not ours is one clear message at start, not an error half-way through.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import StudioError, first_line
from .i18n import msg

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


def ensure_writable(workspace: Workspace, *folders: Path) -> Workspace:
    """Check that the workspace (and `folders`, e.g. its runs/) are folders this process can write in,
    making them when missing; a StudioError says what is wrong and where."""
    for folder in (workspace.root, *folders):
        writable_folder(Path(folder))
    return workspace


def writable_folder(folder: Path) -> Path:
    """`folder`, made if missing, once a file could be created in it."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise StudioError(msg("workspace.not_a_folder"), str(blocking),
                          msg("workspace.not_a_folder_fix", variable=HOME_VARIABLE))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # permission bits do not tell (root ignores them; a read-only mount does not show in them): try
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise _cannot_write(exc, folder) from None
    return folder


def _cannot_write(exc: OSError, folder: Path) -> StudioError:
    fix = msg("workspace.cannot_write_fix", variable=HOME_VARIABLE)
    if exc.errno == errno.EROFS:
        return StudioError(msg("workspace.read_only"), str(folder), fix)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StudioError(msg("workspace.no_permission"), str(folder), msg("workspace.no_permission_fix",
                                                                             variable=HOME_VARIABLE))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StudioError(msg("workspace.disk_full"), str(folder), msg("workspace.disk_full_fix"))
    return StudioError(msg("workspace.cannot_write", detail=first_line(exc)), str(folder), fix)
