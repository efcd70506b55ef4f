"""The two hubs behind `hub.download`: ModelScope (the default) and Hugging Face.

For each: where its endpoint is, a fast reachability check, the repository's file listing (names and
sizes, for the free-disk check and the progress total) and the download itself through the hub's own
client. Only the clients' own exceptions are caught (`hub_errors`), so a bug is never shown as a
network problem. The clients are imported inside functions: `modelscope` alone costs 1.4 s to import.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

from .errors import HubError
from .events import Log
from .hub_errors import client_errors, translate_error
from .hub_progress import ProgressTracker, huggingface_tqdm, modelscope_callback
from .i18n import msg

SOURCES = ("modelscope", "huggingface")
DEFAULT_ENDPOINTS = MappingProxyType({"modelscope": "https://modelscope.cn", "huggingface": "https://huggingface.co"})
ENDPOINT_VARIABLES = MappingProxyType({"modelscope": "MODELSCOPE_ENDPOINT", "huggingface": "HF_ENDPOINT"})
LABELS = MappingProxyType({"modelscope": "ModelScope", "huggingface": "Hugging Face"})
REACH_TIMEOUT_S = 1.5  # a hub that cannot even resolve or accept a connection in this time is not usable
OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int


def endpoint(source: str) -> str:
    check_source(source)
    return (os.environ.get(ENDPOINT_VARIABLES[source]) or DEFAULT_ENDPOINTS[source]).rstrip("/")


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise HubError(msg("hub.unknown_source", source=source), "--source",
                       msg("hub.unknown_source_fix", sources=", ".join(SOURCES)))


def check_reachable(source: str) -> str:
    """Resolve and connect to the hub's host in ~ms, instead of meeting the client's ~22 s of retries."""
    url = endpoint(source)
    label, variable = LABELS[source], ENDPOINT_VARIABLES[source]
    if source == "huggingface" and os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES:
        raise HubError(msg("hub.hf_offline"), url, msg("hub.hf_offline_fix"))
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    fix = msg("hub.no_network_fix", variable=variable, label=label)
    try:
        address = _resolve(host, port, REACH_TIMEOUT_S)
    except (OSError, UnicodeError):  # UnicodeError: a host name that is not valid IDNA
        raise HubError(msg("hub.cannot_resolve", host=host, label=label), url, fix) from None
    try:
        socket.create_connection(address[:2], timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise HubError(msg("hub.cannot_connect", label=label, reason=exc.strerror or str(exc)), url,
                       fix) from None
    return url


def _resolve(host: str, port: int, timeout: float) -> tuple:
    """getaddrinfo with a deadline: it has none of its own and can hang on a dead resolver."""
    result: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            result.append(exc)
        done.set()

    threading.Thread(target=lookup, name="hub-dns-check", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"resolving {host} took over {timeout} s")
    if isinstance(result[0], BaseException):
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
    except client_errors(source) as exc:
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
    except client_errors(source) as exc:
        raise translate_error(exc, source, model_id, revision) from exc


@contextlib.contextmanager
def _client_logs_to(log):
    """Show the ModelScope client's warnings and errors (retries, failed files) as Log events.

    Its own per-file tqdm bars and stderr lines would tear the one progress bar the CLI draws and
    print words that are not from our catalogue, so its bars are switched off (a one-time, idempotent
    setting) and, while its records go to `log`, its stderr handlers are muted.
    """
    from modelscope_hub import _download
    from tqdm.auto import tqdm

    _download.tqdm = functools.partial(tqdm, disable=True)
    client_logger = logging.getLogger("modelscope_hub")
    muted = [(h, h.level) for h in client_logger.handlers if isinstance(h, logging.StreamHandler)] if log else []
    handler = _EventHandler(log, LABELS["modelscope"]) if log is not None else None
    for stream_handler, _level in muted:
        stream_handler.setLevel(logging.CRITICAL + 1)
    if handler is not None:
        client_logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            client_logger.removeHandler(handler)
        for stream_handler, level in muted:
            stream_handler.setLevel(level)


class _EventHandler(logging.Handler):
    def __init__(self, log, label: str):
        super().__init__()
        self.setLevel(logging.WARNING)
        self._log, self._label = log, label

    def emit(self, record: logging.LogRecord) -> None:
        # the client's own words (its language, its file names) are quoted, under our label
        self._log(Log(msg("hub.client_says", label=self._label, text=record.getMessage()), level="warning"))
