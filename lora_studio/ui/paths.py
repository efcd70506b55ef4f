"""Every path a page names, checked against the studio's roots (lora_studio/roots.py) before it is read.

One function per kind of path a handler takes: the dataset files, the model (a hub id or a local
folder), a chat adapter, a run to resume and a preset. Each refuses what lies outside the roots,
with the same message whether the path exists or not, and names a folder without listing it.

Datasets get one more look first. The library's messages about a dataset quote its keys, to help
fix a record; a file that is no dataset at all (a tokenizer.json, a model's config.json, a run's
events.jsonl) is only called that, so a page never reads the keys of a file through an error.
No gradio here: the tabs call these, and the tests call them directly.
"""

from __future__ import annotations

import codecs
import json
import shlex
from pathlib import Path

from ..data import detect_format
from ..data_parse import EXTENSIONS
from ..errors import ConfigError, DataError, JobError, ModelError
from ..i18n import msg
from ..roots import Roots
from ..workspace import Workspace

HEAD = 1 << 20  # bytes read to find a file's first record; a longer record makes it read the whole file
_EMPTY = object()


def dataset_files(roots: Roots, files: list[str]) -> list[Path]:
    """The dataset files resolved, once each is inside the roots, a file, and (if it exists) a dataset."""
    found = []
    for name in files:
        path = roots.check(name, DataError)
        if path.is_dir():
            raise DataError(msg("roots.is_folder"), name, msg("roots.is_folder_fix"))
        if path.is_file() and not looks_like_dataset(path):
            raise not_a_dataset(name, shlex.quote(name))
        found.append(path)
    return found


def not_a_dataset(shown: str, argument: str) -> DataError:
    """The one thing said about a file that is no dataset: its keys stay unread (`argument`: for the CLI's check)."""
    return DataError(msg("roots.not_a_dataset"), shown,
                     msg("roots.not_a_dataset_fix", command=f"python studio.py data check {argument}"))


def looks_like_dataset(path: Path) -> bool:
    """False when the file is surely no dataset: its first record is not an alpaca or chat record.

    True where it cannot tell (an empty file, a syntax error, not UTF-8): the library says what is
    wrong then, and those messages give positions, not content.
    """
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        return True  # the library refuses the type by its suffix alone
    try:
        first = _first_value(path, kind)
    except (OSError, ValueError):  # json's and UTF-8's errors are ValueErrors
        return True
    if first is _EMPTY:
        return True
    try:
        detect_format(first)
    except DataError:
        return False
    return True


def _first_value(path: Path, kind: str, size: int = HEAD):
    """The file's first record as JSON reads it (for a JSON file that is no list: the whole value)."""
    with path.open("rb") as handle:
        data = handle.read(size)
        whole = len(data) < size or not handle.read(1)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    text = codecs.getincrementaldecoder("utf-8")().decode(data, final=whole)
    try:
        return _first_in(text.lstrip(" \t\r\n"), kind)
    except json.JSONDecodeError:
        if whole:
            raise
        return _first_value(path, kind, size=path.stat().st_size + 1)  # a first record longer than HEAD


def _first_in(text: str, kind: str):
    if not text:
        return _EMPTY
    if kind == "jsonl":
        return json.loads(text.split("\n", 1)[0])
    if not text.startswith("["):
        return None if text.startswith("{") else _EMPTY  # an object: no dataset; anything else: the library says
    rest = text[1:].lstrip(" \t\r\n")
    if rest.startswith("]"):
        return _EMPTY
    return json.JSONDecoder().raw_decode(rest)[0]


def is_explicit_path(name: str) -> bool:
    """A model named by a path (/x, ~/x, ./x, ../x) rather than a hub id or a workspace folder's name."""
    path = Path(name)
    return name.startswith(("~", ".")) or path.is_absolute() or ".." in path.parts or "\\" in name


def check_model(roots: Roots, name: str, workspace: Workspace) -> None:
    """Refuse a model the library would read from outside the roots (a hub id not on disk passes)."""
    from ..models import DEMO_MODEL, resolve_model_path

    name = (name or "").strip()
    if not name or name == DEMO_MODEL:
        return  # the demo model lives in the workspace
    if is_explicit_path(name):  # checked before the library looks, so "not found" says nothing outside
        roots.check(name, ModelError)
    try:
        folder = resolve_model_path(name, workspace)
    except ModelError:
        return  # nothing on disk: the library says so, or downloads it into the workspace
    roots.check(folder, ModelError, shown=name)  # a cwd folder of that name, or a workspace folder's link


def adapter_folder(roots: Roots, adapter: str) -> Path:
    """An adapter (or run) folder as chat loads it: inside the roots, and the run's config.yaml too."""
    from ..chat import resolve_adapter_dir, run_config_file

    folder = resolve_adapter_dir(roots.check(adapter, ModelError))
    folder = roots.check(folder, ModelError, shown=adapter)  # a checkpoint folder may be a link
    config_file = run_config_file(folder)  # what chat reads the run's settings from
    if config_file is not None:
        roots.check(config_file, ModelError, shown=adapter)
    return folder


def run_folder(roots: Roots, workspace: Workspace, name: str, resumable: list[str]) -> Path:
    """A run of the workspace named by its folder's name (as the run list shows it), nothing else."""
    name = (name or "").strip()
    folder = workspace.runs / name
    if not name or Path(name).name != name or name in (".", "..") or not folder.is_dir():
        raise JobError(msg("roots.not_a_run", name=name), "runs",
                       msg("roots.not_a_run_fix", runs=", ".join(resumable) or "-"))
    roots.check(folder, JobError, shown=name)
    return folder


def preset_file(roots: Roots, workspace: Workspace, name: str) -> Path:
    """A preset by the name the picker shows (bundled or the user's); never a path."""
    from ..presets import preset_files

    files = preset_files(workspace)
    if name not in files:
        raise ConfigError(msg("roots.not_a_preset", name=name), "presets",
                          msg("roots.not_a_preset_fix", names=", ".join(files) or "-"))
    roots.check(files[name], ConfigError, shown=name)
    return files[name]
