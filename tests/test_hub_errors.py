"""What a failed download tells its user, and that a bug of ours is never told as a network problem."""

from __future__ import annotations

import socket
import time
from collections import namedtuple

import pytest

from lora_studio import hub, hub_errors, hub_sources
from lora_studio.errors import HubError
from lora_studio.events import Failed

from .hub_fixtures import *  # noqa: F403 - the server and its sandbox


def test_unknown_model_id_says_so(server, ws):
    job = hub.DownloadJob("Demo/no-such-model", ws)
    job.run()
    assert job.state == "failed"
    assert isinstance(job.events.last(), Failed)
    message = str(job.error)
    assert "Demo/no-such-model" in message and "no model with this id on ModelScope" in message
    assert not job.folder.exists()


def test_unreachable_endpoint_gives_the_offline_message_fast(monkeypatch, ws):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(HubError, match="no network: cannot connect to ModelScope"):
        hub.download("Qwen/Qwen2.5-0.5B-Instruct", ws)
    assert time.monotonic() - started < 2


def test_a_hanging_dns_resolver_is_cut_short(monkeypatch, ws):
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(5))
    started = time.monotonic()
    with pytest.raises(HubError, match="no network: cannot resolve modelscope.cn") as caught:
        hub.download("Qwen/Qwen2.5-0.5B-Instruct", ws)
    assert time.monotonic() - started < 2
    assert "MODELSCOPE_ENDPOINT" in str(caught.value)


def test_not_enough_disk_is_refused_before_downloading(server, monkeypatch, ws):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(HubError, match="not enough free disk"):
        hub.download("Demo/tiny-big", ws)
    assert server.file_requests() == []


def test_hugging_face_offline_mode_is_reported(monkeypatch, ws):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.download("Qwen/Qwen2.5-0.5B-Instruct", ws, source="huggingface")


@pytest.mark.parametrize("bad", ["", "just-a-name", "a/b/c", "/abs"])
def test_malformed_model_ids_are_rejected(bad, ws):
    with pytest.raises(HubError, match="owner/name"):
        hub.DownloadJob(bad, ws)


def test_a_bug_of_ours_during_the_transfer_is_an_internal_error_not_a_network_problem(server, monkeypatch, ws):
    break_progress(monkeypatch)
    job = hub.DownloadJob("Demo/tiny", ws)
    job.run()
    assert job.state == "failed"
    assert type(job.error) is TypeError  # not a HubError saying the transfer was interrupted
    failed = job.events.last()
    assert isinstance(failed, Failed) and failed.text.key == "errors.internal"
    assert failed.message.startswith("Internal error: TypeError: unsupported operand")
    assert "interrupted" not in failed.message


def test_a_bug_of_ours_while_listing_files_is_an_internal_error(server, monkeypatch, ws):
    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'path'")

    monkeypatch.setattr(hub_sources, "RemoteFile", broken)
    with pytest.raises(AttributeError, match="no attribute 'path'"):
        hub.download("Demo/tiny", ws)


def test_the_cli_reports_a_bug_in_a_download_as_an_internal_error(server, monkeypatch, capsys, ws):
    break_progress(monkeypatch)
    assert run_cli(ws, "download", "Demo/tiny") == 1
    err = without_bars(capsys.readouterr().err)
    assert err.endswith("internal error: TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'\n"
                        "(run with LORA_STUDIO_DEBUG=1 for the traceback, and please report it)")
    assert "interrupted" not in err and "Traceback" not in err


def test_only_the_hub_clients_own_errors_count_as_hub_problems():
    import requests
    from huggingface_hub import errors as hf_errors
    from modelscope_hub import errors as ms_errors

    assert issubclass(ms_errors.FileDownloadError, hub_errors.client_errors("modelscope"))
    assert issubclass(hf_errors.RepositoryNotFoundError, hub_errors.client_errors("huggingface"))
    for source in hub_errors.CLIENT_PACKAGES:
        assert not issubclass(TypeError, hub_errors.client_errors(source))
        assert not issubclass(AttributeError, hub_errors.client_errors(source))

    def wrapped(cause: BaseException) -> BaseException:
        """What the ModelScope client raises after a file's transfer failed for good."""
        try:
            try:
                raise cause
            except Exception as exc:
                raise ms_errors.NetworkError("download failed after 0 retries") from exc
        except ms_errors.NetworkError as network:
            return ms_errors.FileDownloadError("1 of 1 file(s) failed", failed_files={"model.bin": network})

    cut = wrapped(requests.exceptions.ChunkedEncodingError("connection broken"))
    assert hub_errors.hidden_bug(cut, "modelscope") is None
    translated = hub_errors.translate_error(cut, "modelscope", "Demo/tiny", "")
    assert translated.message == ("Demo/tiny: the transfer of model.bin from ModelScope was interrupted. Check the "
                                  "connection. Run the same download again: finished files are kept and the "
                                  "unfinished one resumes.")
    bug = TypeError("a bug of ours")
    assert hub_errors.hidden_bug(wrapped(bug), "modelscope") is bug
    with pytest.raises(TypeError, match="a bug of ours"):
        hub_errors.translate_error(wrapped(bug), "modelscope", "Demo/tiny", "")


def _hf_http_error(cls, status: int):
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/models/a/b")
    return cls(f"{status} from the hub", response=httpx2.Response(status, request=request))


def _client_error(source: str, kind: str) -> BaseException:
    """An exception of the installed client's own class for each kind of failure."""
    import errno

    if source == "huggingface":
        import httpx2
        from huggingface_hub import errors as hf

        return {"not_found": lambda: _hf_http_error(hf.RepositoryNotFoundError, 404),
                "refused": lambda: _hf_http_error(hf.GatedRepoError, 403),
                "interrupted": lambda: httpx2.ReadError("connection reset"),
                "disk_full": lambda: OSError(errno.ENOSPC, "No space left on device"),
                "other": lambda: _hf_http_error(hf.HfHubHTTPError, 500)}[kind]()
    from modelscope_hub import errors as ms

    return {"not_found": lambda: ms.NotExistError("model not found"),
            "refused": lambda: ms.AuthenticationError("login required"),
            "interrupted": lambda: ms.NetworkError("connection reset"),
            "disk_full": lambda: OSError(errno.ENOSPC, "No space left on device"),
            "other": lambda: ms.InvalidParameter("bad revision format")}[kind]()


@pytest.mark.parametrize("source,label", [("modelscope", "ModelScope"), ("huggingface", "Hugging Face")])
@pytest.mark.parametrize("kind,what", [
    ("not_found", "no model with this id on {label}."),
    ("refused", "{label} refused access to this model: it is gated or private."),
    ("interrupted", "the transfer from {label} was interrupted. Check the connection."),
    ("disk_full", "the disk filled up during the download."),
    ("other", "the download from {label} failed: "),
])
def test_each_client_error_becomes_a_message_a_user_can_act_on(source, label, kind, what):
    error = hub_errors.translate_error(_client_error(source, kind), source, "a/b", "")
    assert isinstance(error, HubError)
    assert error.message.startswith("a/b: " + what.format(label=label))
