"""The download manager against the real modelscope client and a local fake ModelScope server:
progress, identical files, resuming after a cut or a cancel, and what a model folder lacks."""

from __future__ import annotations

import threading
import time

import pytest

from lora_studio import hub
from lora_studio.errors import HubError
from lora_studio.events import Finished, Log
from lora_studio.hub_progress import ProgressTracker

from .hub_fixtures import *  # noqa: F403 - the server and its sandbox


def test_download_reaches_100_percent_with_identical_files(server, tiny_model, workspace, ws):
    job = hub.DownloadJob("Demo/tiny", ws).start()
    assert job.join(timeout=60)
    assert job.state == "completed", job.events.all()
    assert job.folder == workspace / "models" / "Demo--tiny"
    progress = progress_events(job)
    total = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert progress[-1].bytes_done == progress[-1].bytes_total == total
    assert [p.bytes_done for p in progress] == sorted(p.bytes_done for p in progress)
    assert job.events.last() == Finished(status="completed", output=str(job.folder), time=job.events.last().time)
    assert same_files(tiny_model, job.folder)
    assert hub.check_model_folder(job.folder) == [] and job.missing == []
    [local] = hub.list_local_models(ws)
    assert (local.name, local.path, local.size, local.complete) == ("Demo/tiny", job.folder, total, True)


def test_downloaded_model_loads_and_chats(server, ws):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hub.download("Demo/tiny", ws)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, ids["input_ids"].shape[1]:]), str)


def test_transfer_cut_in_the_middle_resumes_with_a_range_request(server, big_model, ws):
    server.cut_after = {BIG_FILE: 700_000}
    folder = hub.download("Demo/tiny-big", ws)
    big_requests = [r for r in server.file_requests() if r.query["FilePath"] == BIG_FILE]
    assert [r.range for r in big_requests] == ["", "bytes=700000-"]
    assert same_files(big_model, folder)


def test_interrupted_download_says_so_and_the_rerun_fetches_only_what_is_missing(server, big_model,
                                                                                  monkeypatch, ws):
    from modelscope_hub import _download

    # The client retries a cut transfer itself (with 2-16 s back-offs); with retries off the first cut
    # ends the run, as a network that stays down would.
    monkeypatch.setattr(_download, "DOWNLOAD_RETRY_TIMES", 0)
    server.cut_after = {BIG_FILE: 700_000}
    with pytest.raises(HubError, match="interrupted") as caught:
        hub.download("Demo/tiny-big", ws)
    assert "Run the same download again" in str(caught.value)
    folder = hub.model_folder("Demo/tiny-big", ws)
    assert (folder / (BIG_FILE + ".incomplete")).stat().st_size == 700_000
    assert hub.list_local_models(ws)[0].complete is False

    server.cut_after, first_run = {}, len(server.requests)
    hub.download("Demo/tiny-big", ws)
    rerun = [r for r in server.requests[first_run:] if "FilePath" in r.query]
    assert [(r.query["FilePath"], r.range) for r in rerun] == [(BIG_FILE, "bytes=700000-")]
    assert same_files(big_model, folder)


def test_cancel_stops_the_client_threads_and_keeps_partial_files(server, big_model, ws):
    server.delay = 0.02  # ~0.7 s for the big file
    threads_before = set(threading.enumerate())
    job = hub.DownloadJob("Demo/tiny-big", ws).start()
    deadline = time.monotonic() + 20
    while not any(p.current_file == BIG_FILE and p.bytes_done for p in progress_events(job)):
        assert time.monotonic() < deadline and job.state == "running"
        time.sleep(0.01)
    job.cancel()
    assert job.join(timeout=10)
    assert job.state == "cancelled"
    assert isinstance(job.events.last(), Finished) and job.events.last().status == "cancelled"
    time.sleep(0.2)
    leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("ThreadPool")]
    assert leftover == []
    partial_size = (job.folder / (BIG_FILE + ".incomplete")).stat().st_size
    assert 0 < partial_size < BIG_SIZE
    served = [p.relative_to(big_model).as_posix() for p in big_model.rglob("*") if p.is_file()]
    unfinished = {name for name in served if not (job.folder / name).is_file()}

    server.delay, first_run = 0.0, len(server.requests)
    hub.download("Demo/tiny-big", ws)
    rerun = {r.query["FilePath"]: r.range for r in server.requests[first_run:] if "FilePath" in r.query}
    assert set(rerun) == unfinished and rerun[BIG_FILE] == f"bytes={partial_size}-"
    assert same_files(big_model, job.folder)


def test_model_folders_never_leave_the_workspace(workspace, ws):
    for model_id in ("../..", "Qwen/../../etc", "a/.."):
        folder = hub.model_folder(model_id, ws)
        assert folder.parent == (workspace / "models").resolve()


def test_check_model_folder_names_what_is_missing(tmp_path, tiny_model):
    assert hub.check_model_folder(tiny_model) == []
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    missing = [str(item) for item in hub.check_model_folder(folder)]
    assert len(missing) == 2 and missing[0].startswith("tokenizer") and missing[1].startswith("weights")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}')
    (folder / "model-1.safetensors").write_bytes(b"x")
    (folder / "model-2.safetensors.incomplete").write_bytes(b"x")
    missing = hub.check_model_folder(folder)
    assert hub.missing_text(missing, "en") == "weights shard model-2.safetensors; unfinished download model-2.safetensors"
    assert hub.missing_text(missing, "zh") == "权重分片 model-2.safetensors；未下载完的 model-2.safetensors"


def test_tracker_counts_a_restarted_file_once():
    events = []
    tracker = ProgressTracker({"a": 100, "b": 50}, {"b": 50}, events.append, lambda: False)
    tracker.start_file("a")
    tracker.advance("a", 60)
    tracker.advance("a", -60)  # the client threw its partial file away and starts over
    tracker.start_file("a")
    tracker.advance("a", 100)
    tracker.finish()
    assert (events[-1].bytes_done, events[-1].bytes_total, events[-1].eta) == (150, 150, 0.0)


def test_log_events_reach_the_cli_during_a_cut_transfer(server, ws):
    server.cut_after = {BIG_FILE: 700_000}
    seen = []
    hub.download("Demo/tiny-big", ws, on_event=seen.append)
    assert any(isinstance(e, Log) and e.level == "warning" and BIG_FILE in e.message for e in seen)
