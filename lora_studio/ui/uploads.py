"""Datasets uploaded through the page: checked first, then kept in workspace/data; Gradio's copy removed.

Gradio writes an upload to its own temporary folder and hands the handler that file. The studio
checks every file of an upload (size, type, that it is a dataset whose every record reads) before it
keeps any, so a file that fails is never in the workspace; and it deletes Gradio's copy whatever
the outcome. The upload event takes Gradio's raw file data (preprocess=False): Gradio's own
preprocessing leaves an empty temporary file behind on each call and refuses a type in English.
No gradio import here: the path of Gradio's upload folder is passed in.
"""

from __future__ import annotations

import filecmp
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data import load_records
from ..data_parse import EXTENSIONS
from ..errors import DataError, StudioError
from ..hub_local import format_bytes
from ..i18n import Msg, msg
from ..runs import sanitize_run_name
from ..roots import resolved
from .paths import looks_like_dataset, not_a_dataset

MB = 1 << 20
DEFAULT_LIMIT_MB = 200


@dataclass(frozen=True)
class Upload:
    path: Path   # Gradio's temporary copy
    name: str    # the file's own name, as the uploader's computer called it

    @classmethod
    def from_payload(cls, payload) -> "Upload":
        """From Gradio's file data (a dict with path and orig_name) or a plain path."""
        if isinstance(payload, dict):
            path = Path(str(payload.get("path") or ""))
            return cls(path, Path(str(payload.get("orig_name") or path.name)).name)
        path = Path(str(payload))
        return cls(path, path.name)


def keep_uploads(payloads, folder: Path, upload_root: Path, limit_bytes: int) -> list[Path]:
    """Check every uploaded file, then copy each into `folder`; Gradio's copies are removed in any case."""
    uploads = [Upload.from_payload(payload) for payload in payloads or []]
    try:
        for upload in uploads:
            check_upload(upload, upload_root, limit_bytes)
        return [keep_upload(upload.path, folder, clean_name(upload.name)) for upload in uploads]
    finally:
        for upload in uploads:
            discard(upload.path, upload_root)


def check_upload(upload: Upload, upload_root: Path, limit_bytes: int) -> None:
    """A DataError, named by the file's own name, unless the upload is a dataset the studio can train on."""
    if not resolved(upload.path).is_relative_to(resolved(upload_root)) or not upload.path.is_file():
        raise DataError(msg("ui.upload_missing"), upload.name, msg("ui.upload_again_fix"))
    size = upload.path.stat().st_size
    if size > limit_bytes:
        raise DataError(msg("ui.upload_too_big", size=format_bytes(size), limit=format_bytes(limit_bytes)),
                        upload.name, msg("ui.upload_too_big_fix", option="--max-upload-mb"))
    kind = EXTENSIONS.get(Path(upload.name).suffix.lower())
    if kind is None or kind != EXTENSIONS.get(upload.path.suffix.lower()):  # the library reads by the suffix
        raise DataError(msg("data.unsupported_type", suffix=Path(upload.name).suffix or msg("data.no_extension")),
                        upload.name, msg("ui.upload_type_fix"))
    if not looks_like_dataset(upload.path):
        raise not_a_dataset(upload.name, "FILE")  # the uploader's copy of it is on their computer
    try:
        load_records(upload.path)
    except StudioError as exc:  # the library names Gradio's temporary copy: name the user's file instead
        raise type(exc)(exc.what, renamed(exc.where, str(upload.path), upload.name), exc.fix) from None


def renamed(value, old: str, new: str):
    """A message's place with one name replaced (nested messages too)."""
    if isinstance(value, Msg):
        return type(value)(value.key, {key: renamed(param, old, new) for key, param in value.params.items()})
    return value.replace(old, new) if isinstance(value, str) else value


def clean_name(name: str) -> str:
    """A safe file name from the uploader's, made as run names are (no path, no odd characters), its suffix kept."""
    path = Path(name)
    return f"{sanitize_run_name(path.stem) or 'upload'}{path.suffix.lower()}"


def keep_upload(source: Path, folder: Path, name: str | None = None) -> Path:
    """Copy an uploaded file into `folder` as `name`, never over a different file already there.

    The same bytes uploaded again reuse the earlier copy; a different file of the same name becomes
    name-2.json, name-3.json, ...: a dataset a past run trained on is never replaced under it.
    """
    name = Path(name or source.name)
    folder.mkdir(parents=True, exist_ok=True)
    destination, number = folder / name, 1
    while destination.exists():
        if filecmp.cmp(source, destination, shallow=False):
            return destination
        number += 1
        destination = folder / f"{name.stem}-{number}{name.suffix}"
    shutil.copyfile(source, destination)
    return destination


def discard(path: Path, upload_root: Path) -> None:
    """Delete Gradio's temporary copy, and its folder once empty; never anything outside Gradio's folder."""
    root = resolved(upload_root)
    target = resolved(path)
    if target == root or not target.is_relative_to(root):
        return
    target.unlink(missing_ok=True)
    folder = target.parent
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()  # only an empty one: Gradio keeps one folder per uploaded file
        except OSError:
            break
        folder = folder.parent
