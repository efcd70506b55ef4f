"""Which exceptions are the hub clients' own, and what each one means to a user.

The download code catches only these (`client_errors`): a hub, network or disk problem becomes a
`HubError` a user can act on. Anything else - a TypeError, an AttributeError: a bug, ours or a
client's - propagates, and the job reports it as an internal error instead of as a network problem.

The classes were read from the installed packages, not guessed:
- modelscope 1.40 / modelscope_hub 0.5: every error derives from `modelscope_hub.errors.HubError`
  (`NetworkError` and `RequestTimeoutError` are also OSErrors); it talks HTTP through requests
  (`RequestException`, an OSError) and urllib3 (`urllib3.exceptions.HTTPError`, not an OSError).
- huggingface_hub 2.4: no common base; `huggingface_hub.errors` holds its classes (the HTTP ones derive
  from `httpx2.HTTPError` and OSError); it talks HTTP through httpx2 (`httpx2.HTTPError`).
- OSError: sockets, TLS, a full or read-only disk.

A client may wrap what it caught: the ModelScope client retries any exception raised while a file
streams, then raises `NetworkError(...) from it` and lists each file's error in a `FileDownloadError`.
A bug in our progress callback reaches us that way, so `translate_error` looks through the causes
and the per-file errors and raises the bug itself when it finds one.
"""

from __future__ import annotations

import errno
import http.client
import inspect
from types import MappingProxyType

from .errors import HubError, first_line
from .i18n import msg

# Packages whose own exception classes (private ones included, such as the ModelScope client's
# _IncompleteBodyError, which it wraps in a NetworkError) are a hub or network problem, not a bug.
CLIENT_PACKAGES = MappingProxyType({
    "modelscope": frozenset({"modelscope", "modelscope_hub", "requests", "urllib3"}),
    "huggingface": frozenset({"huggingface_hub", "httpx2", "httpcore2", "hf_xet"})})


def client_errors(source: str) -> tuple[type[BaseException], ...]:
    """The exception types `source`'s client raises for a hub, network or disk problem."""
    if source == "modelscope":
        import requests
        import urllib3
        from modelscope_hub.errors import HubError as ModelScopeError

        return (ModelScopeError, requests.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError)
    import httpx2
    from huggingface_hub import errors as hf_errors

    own = tuple(cls for _name, cls in inspect.getmembers(hf_errors, inspect.isclass)
                if issubclass(cls, Exception) and cls.__module__ == hf_errors.__name__)
    return (*own, httpx2.HTTPError, http.client.HTTPException, OSError)


REPOSITORY_ANSWERS = ("not_found", "revision_not_found", "refused")  # the repository's answer, not a file's


def _kinds(source: str) -> tuple[tuple[str, tuple[type[BaseException], ...]], ...]:
    """(kind, exception types) in the order they are tested: the specific before the general."""
    if source == "modelscope":
        import requests
        import urllib3
        from modelscope_hub import errors as ms

        network = (ms.NetworkError, ms.StorageError, ms.ServerError, requests.ConnectionError,
                   requests.Timeout, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                   urllib3.exceptions.TimeoutError, http.client.IncompleteRead, ConnectionError, TimeoutError)
        return (("not_found", (ms.NotExistError,)), ("refused", (ms.AuthenticationError, ms.PermissionDeniedError)),
                ("integrity", (ms.FileIntegrityError,)), ("disk_full", ()), ("interrupted", network))
    import httpx2
    from huggingface_hub import errors as hf

    return (("revision_not_found", (hf.RevisionNotFoundError,)), ("refused", (hf.GatedRepoError,)),
            ("not_found", (hf.RepositoryNotFoundError,)), ("disk_full", ()),
            ("interrupted", (httpx2.TransportError, ConnectionError, TimeoutError)))


def _is_kind(exc: BaseException, kind: str, types: tuple[type[BaseException], ...]) -> bool:
    if kind == "disk_full":  # a full disk is an OSError's errno, whichever client wrapped it
        return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    return isinstance(exc, types)


def causes(exc: BaseException):
    """The exception and what it was raised from (or, with no explicit cause, while handling)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__


def _per_file_errors(exc: BaseException) -> list[BaseException]:
    """Each failed file's error chain, for a repository download that failed file by file."""
    failed = getattr(exc, "failed_files", None)
    return [link for error in (failed.values() if isinstance(failed, dict) else ()) for link in causes(error)]


def hidden_bug(exc: BaseException, source: str) -> BaseException | None:
    """The first exception in `exc`'s causes or per-file errors that no hub client or network raised."""
    known, packages = client_errors(source), CLIENT_PACKAGES[source]
    for link in [*causes(exc), *(e for link in causes(exc) for e in _per_file_errors(link))]:
        if not isinstance(link, known) and type(link).__module__.split(".")[0] not in packages:
            return link
    return None


def translate_error(exc: BaseException, source: str, model_id: str, revision: str) -> HubError:
    """One clear HubError for a client's error; a bug found inside it is raised as itself instead."""
    from .hub_sources import LABELS, endpoint

    if isinstance(exc, HubError):
        return exc
    bug = hidden_bug(exc, source)
    if bug is not None:
        raise bug
    label, where = LABELS[source], f"{model_id}@{revision}" if revision else model_id
    chain = list(causes(exc))
    per_file = [e for link in chain for e in _per_file_errors(link)]
    kind = _kind_of(chain, per_file, source)
    if kind in ("not_found", "revision_not_found"):
        what = (msg("hub.revision_not_found", revision=revision, label=label)
                if revision and kind == "revision_not_found" else msg("hub.model_not_found", label=label))
        return HubError(what, where, msg("hub.not_found_fix_revision" if revision else "hub.not_found_fix",
                                         url=endpoint(source)))
    if kind == "refused":
        return HubError(msg("hub.refused", label=label), where, msg("hub.refused_fix", url=endpoint(source)))
    if kind == "integrity":
        return HubError(msg("hub.integrity"), where, msg("hub.resume_hint"))
    if kind == "disk_full":
        return HubError(msg("hub.disk_full"), where, msg("hub.disk_full_fix"))
    if kind == "interrupted":
        failed = sorted({name for link in chain for name in (getattr(link, "failed_files", None) or {})})
        what = (msg("hub.interrupted_files", label=label, files=", ".join(failed)) if failed
                else msg("hub.interrupted", label=label))
        return HubError(what, where, msg("hub.interrupted_fix"))
    return HubError(msg("hub.failed", label=label, detail=first_line(exc)), where, msg("hub.resume_hint"))


def _kind_of(chain: list[BaseException], per_file: list[BaseException], source: str) -> str:
    for kind, types in _kinds(source):
        links = chain if kind in REPOSITORY_ANSWERS else chain + per_file
        if any(_is_kind(e, kind, types) for e in links):
            return kind
    return "other"
