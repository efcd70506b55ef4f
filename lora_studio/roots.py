"""The folders a program serving a web page may read and write, and the check every path goes through.

The studio answers whoever reaches its page, so a path typed there (a dataset, a model folder, an
adapter, a run, a preset) must not reach the rest of the host. Its roots are the workspace, the
project's bundled data/ and presets/, and the folders whoever started it allowed (`--allow-path
DIR`). A path is resolved the way the library reads it (~ expanded, relative to the working
directory, symlinks followed) before the check, so neither ../ nor a symlink inside a root leads
out. The CLI does not use this: a person typing a command can read those files anyway.

    roots = Roots.for_studio(workspace, allowed=["/srv/datasets"])
    path = roots.check("data/huanhuan_sample.json", DataError)   # the resolved path, or the error
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, StudioError
from .i18n import msg
from .workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("data", "presets")  # the project's own folders a page may read


def resolved(path: str | Path) -> Path:
    """Where the library would read `path`: ~ expanded, relative to the working directory, links followed."""
    return Path(path).expanduser().absolute().resolve()


@dataclass(frozen=True)
class Roots:
    folders: tuple[Path, ...]

    @classmethod
    def for_studio(cls, workspace: Workspace, allowed=()) -> "Roots":
        """The workspace, the bundled data/ and presets/, and each allowed folder (which must exist)."""
        folders = [workspace.root, *(PROJECT_ROOT / name for name in BUNDLED)]
        for folder in allowed:
            path = resolved(folder)
            if not path.is_dir():
                raise ConfigError(msg("roots.allow_not_a_folder"), str(folder), msg("roots.allow_not_a_folder_fix"))
            folders.append(path)
        return cls(tuple(dict.fromkeys(resolved(folder) for folder in folders)))

    def contains(self, path: Path) -> bool:
        """Whether a resolved path lies inside (or is) one of the roots."""
        return any(path == root or path.is_relative_to(root) for root in self.folders)

    def check(self, path: str | Path, error: type[StudioError] = StudioError, shown: str | None = None) -> Path:
        """The resolved path if it lies inside a root, else `error` naming the path as given (`shown`).

        The refusal is the same whether the path exists or not, so it tells nothing about the host.
        """
        shown = str(path).strip() if shown is None else shown
        if not str(path).strip():
            raise error(msg("roots.empty"), "", msg("roots.empty_fix"))
        try:
            found = resolved(str(path).strip())
        except (OSError, RuntimeError, ValueError):  # a symlink loop, ~nobody, a NUL byte: nothing to read
            found = None
        if found is None or not self.contains(found):
            raise self.refusal(shown, error)
        return found

    def refusal(self, shown: str, error: type[StudioError] = StudioError) -> StudioError:
        """The error for a path outside the roots: it names them and how to add one."""
        return error(msg("roots.outside", roots=self.listing()), shown,
                     msg("roots.outside_fix", option="--allow-path"))

    def listing(self) -> str:
        return ", ".join(str(folder) for folder in self.folders)
