"""The two hubs behind `hub.download`: ModelScope (the default) and Hugging Face.

For each: where its endpoint is, a fast reachability check, the repository's file listing (names and
sizes, for the free-disk check and the progress total), the download itself through the hub's own
client, and the translation of that client's exceptions into `HubError`s a user can act on.
The clients are imported inside functions: `modelscope` alone costs 1.4 s to import.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import HubError
from .events import Log
from .hub_progress import ProgressTracker, huggingface_tqdm, modelscope_callback

SOURCES = ("modelscope", "huggingface")
DEFAULT_ENDPOINTS = {"modelscope": "https://modelscope.cn", "huggingface": "https://huggingface.co"}
ENDPOINT_VARIABLES = {"modelscope": "MODELSCOPE_ENDPOINT", "huggingface": "HF_ENDPOINT"}
LABELS = {"modelscope": "ModelScope", "huggingface": "Hugging Face"}
REACH_TIMEOUT_S = 1.5  # a hub that cannot even resolve or accept a connection in this time is not usable
RESUME_HINT = "Run the same download again: finished files are kept and the unfinished one resumes."


@dataclass
class RemoteFile:
    path: str
    size: int


def endpoint(source: str) -> str:
    check_source(source)
    return (os.environ.get(ENDPOINT_VARIABLES[source]) or DEFAULT_ENDPOINTS[source]).rstrip("/")


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise HubError(f"unknown download source '{source}'", "--source", f"Use one of: {', '.join(SOURCES)}.")


def check_reachable(source: str) -> str:
    """Resolve and connect to the hub's host in ~ms, instead of meeting the client's ~22 s of retries."""
    url = endpoint(source)
    label, variable = LABELS[source], ENDPOINT_VARIABLES[source]
    if source == "huggingface" and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubError("Hugging Face is switched to offline mode (HF_HUB_OFFLINE is set)", url,
                       "Unset HF_HUB_OFFLINE to download, or use --source modelscope.")
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    fix = (f"Check the internet connection (and a proxy, if you use one), then run the download again. "
           f"{variable} chooses another {label} server.")
    try:
        address = _resolve(host, port, REACH_TIMEOUT_S)
    except OSError:
        raise HubError(f"no network: cannot resolve {host} ({label})", url, fix) from None
    try:
        socket.create_connection(address[:2], timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise HubError(f"no network: cannot connect to {label} ({exc.strerror or exc})", url, fix) from None
    return url


def _resolve(host: str, port: int, timeout: float) -> tuple:
    """getaddrinfo with a deadline: it has none of its own and can hang on a dead resolver."""
    result: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4])
        except Exception as exc:  # noqa: BLE001 - whatever the resolver raises, the caller gets an OSError
            result.append(exc if isinstance(exc, OSError) else OSError(f"resolving {host} failed: {exc}"))
        done.set()

    threading.Thread(target=lookup, name="hub-dns-check", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"resolving {host} took over {timeout} s")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def list_files(source: str, model_id: str, revision: str) -> list[RemoteFile]:
    """The repository's files and sizes, or a HubError saying the model or revision does not exist."""
    try:
        if source == "modelscope":
            from modelscope.hub.api import HubApi

            entries = HubApi(endpoint=endpoint(source)).get_model_files(model_id, revision=revision or None,
                                                                       recursive=True)
            return [RemoteFile(e["Path"], int(e.get("Size") or 0)) for e in entries
                    if e.get("Type", "blob") != "tree"]
        from huggingface_hub import HfApi

        info = HfApi(endpoint=endpoint(source)).model_info(model_id, revision=revision or None,
                                                            files_metadata=True)
        return [RemoteFile(s.rfilename, int(s.size or 0)) for s in info.siblings or []]
    except Exception as exc:  # every client error becomes one message; see translate_error
        raise translate_error(exc, source, model_id, revision) from exc


def fetch(source: str, model_id: str, revision: str, folder: Path, tracker: ProgressTracker,
          log=None) -> None:
    """Download every file of the repository into `folder`, reporting bytes to `tracker`."""
    try:
        if source == "modelscope":
            from modelscope import snapshot_download

            with _client_logs_to(log):
                snapshot_download(model_id, revision=revision or None, local_dir=str(folder),
                                  cache_dir=str(folder.parent / ".cache" / "modelscope"),
                                  endpoint=endpoint(source), progress_callbacks=[modelscope_callback(tracker)])
        else:
            from huggingface_hub import snapshot_download

            snapshot_download(model_id, revision=revision or None, local_dir=str(folder),
                              endpoint=endpoint(source), tqdm_class=huggingface_tqdm(tracker))
    except Exception as exc:
        raise translate_error(exc, source, model_id, revision) from exc


@contextlib.contextmanager
def _client_logs_to(log):
    """Show the ModelScope client's warnings (retries, failed files) as Log events, not raw stderr lines.

    Its own per-file tqdm bars and log lines would tear the one progress bar the CLI draws, so its bars
    are switched off and its stderr handler only passes errors (a one-time, idempotent setting).
    """
    from modelscope_hub import _download
    from tqdm.auto import tqdm

    _download.tqdm = functools.partial(tqdm, disable=True)
    client_logger = logging.getLogger("modelscope_hub")
    for handler in client_logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)
    handler = _EventHandler(log) if log is not None else None
    if handler is not None:
        client_logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            client_logger.removeHandler(handler)


class _EventHandler(logging.Handler):
    def __init__(self, log):
        super().__init__()
        self.setLevel(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        self._log(Log(record.getMessage(), level="warning"))


def translate_error(exc: BaseException, source: str, model_id: str, revision: str) -> HubError:
    """One clear HubError for whatever a hub client raised."""
    if isinstance(exc, HubError):
        return exc
    label = LABELS[source]
    names = {type(e).__name__ for e in _chain(exc)}
    # A repository download that failed file by file lists each file's own error.
    failed = getattr(exc, "failed_files", None) or {}
    file_names = {type(e).__name__ for error in failed.values() for e in _chain(error)}
    where = f"{model_id}@{revision}" if revision else model_id
    if names & {"NotExistError", "RepositoryNotFoundError", "RevisionNotFoundError"}:
        what = (f"revision '{revision}' of this model was not found on {label}" if revision and
                "RevisionNotFoundError" in names else f"no model with this id on {label}")
        return HubError(what, where, f"Check the spelling (owner/name, case matters) on {endpoint(source)}"
                        f"{', and the revision' if revision else ''}; `python studio.py models` lists what "
                        "is already downloaded.")
    if names & {"GatedRepoError", "AuthenticationError", "PermissionDeniedError"}:
        return HubError(f"{label} refused access to this model (gated or private)", where,
                        f"Accept its licence on {endpoint(source)} and log in with a token, or pick another model.")
    if (names | file_names) & {"FileIntegrityError", "FileSizeMismatchError"}:
        return HubError("a downloaded file did not match the hub's checksum or size", where, RESUME_HINT)
    errors = [*_chain(exc), *(e for error in failed.values() for e in _chain(error))]
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in errors):
        return HubError("the disk filled up during the download", where,
                        "Free some space, then run the same download again to resume.")
    if failed or names & {"NetworkError", "RequestTimeoutError", "ConnectionError", "ChunkedEncodingError",
                          "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "ReadError", "IncompleteRead"}:
        files = f" ({', '.join(sorted(failed))})" if failed else ""
        return HubError(f"the transfer from {label} was interrupted{files}", where,
                        "Check the connection. " + RESUME_HINT)
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return HubError(f"the download from {label} failed: {first_line}", where, RESUME_HINT)


def _chain(exc: BaseException):
    """The exception and its causes: the ModelScope client wraps NotExistError in requests' HTTPError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
