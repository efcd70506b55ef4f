"""The download manager against the real modelscope client and a local fake ModelScope server.

No test touches the network: MODELSCOPE_ENDPOINT points at tests/modelscope_server.py on 127.0.0.1,
and the client's cache, lock and credential folders are redirected into the test's tmp_path.
"""

from __future__ import annotations

import _thread
import argparse
import filecmp
import random
import shutil
import signal
import socket
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from lora_studio import cli_hub, hub
from lora_studio.errors import HubError
from lora_studio.events import DownloadProgress, Failed, Finished, Log
from lora_studio.hub_progress import ProgressTracker
from tests.modelscope_server import FakeModelScope

BIG_FILE = "extra.bin"
BIG_SIZE = 2 * 1024 * 1024


def _build_tiny_model(dest: Path) -> Path:
    """A loadable llama chat model of a few KB, for when lora_studio.demo_model is not there yet."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["你好，我是甄嬛。", "hello, who are you?"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    fast.save_pretrained(dest)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_model(request, tmp_path_factory) -> Path:
    try:
        import lora_studio.demo_model  # noqa: F401
    except ImportError:
        return _build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
    return request.getfixturevalue("demo_model_dir")


@pytest.fixture(scope="session")
def big_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model plus a 2 MiB file: long enough to cut or cancel in the middle."""
    folder = tmp_path_factory.mktemp("big") / "tiny-big"
    shutil.copytree(tiny_model, folder)
    (folder / BIG_FILE).write_bytes(random.Random(0).randbytes(BIG_SIZE))
    return folder


@pytest.fixture(autouse=True)
def modelscope_sandbox(tmp_path, monkeypatch):
    """The client keeps a process-wide config read from the environment once: rebuild it per test so
    its credential folder (MODELSCOPE_HOME, else ~/.modelscope) is this test's tmp_path."""
    from modelscope_hub.config import set_default_config

    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    set_default_config(None)
    yield
    set_default_config(None)


@pytest.fixture
def server(tiny_model, big_model, monkeypatch):
    with FakeModelScope({"Demo/tiny": tiny_model, "Demo/tiny-big": big_model}) as fake:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
        yield fake


def _progress(job) -> list[DownloadProgress]:
    return [e for e in job.events.all() if isinstance(e, DownloadProgress)]


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def test_download_reaches_100_percent_with_identical_files(server, tiny_model, workspace):
    job = hub.DownloadJob("Demo/tiny").start()
    assert job.join(timeout=60)
    assert job.state == "completed", job.events.all()
    assert job.folder == workspace / "models" / "Demo--tiny"
    progress = _progress(job)
    total = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert progress[-1].bytes_done == progress[-1].bytes_total == total
    assert [p.bytes_done for p in progress] == sorted(p.bytes_done for p in progress)
    assert job.events.last() == Finished(status="completed", output=str(job.folder), time=job.events.last().time)
    assert _same_files(tiny_model, job.folder)
    assert hub.check_model_folder(job.folder) == [] and job.missing == []
    [local] = hub.list_local_models()
    assert (local.name, local.path, local.size, local.complete) == ("Demo/tiny", job.folder, total, True)


def test_downloaded_model_loads_and_chats(server):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hub.download("Demo/tiny")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, ids["input_ids"].shape[1]:]), str)


def test_transfer_cut_in_the_middle_resumes_with_a_range_request(server, big_model):
    server.cut_after = {BIG_FILE: 700_000}
    folder = hub.download("Demo/tiny-big")
    big_requests = [r for r in server.file_requests() if r.query["FilePath"] == BIG_FILE]
    assert [r.range for r in big_requests] == ["", "bytes=700000-"]
    assert _same_files(big_model, folder)


def test_interrupted_download_says_so_and_the_rerun_fetches_only_what_is_missing(server, big_model,
                                                                                  monkeypatch):
    from modelscope_hub import _download

    # The client retries a cut transfer itself (with 2-16 s back-offs); with retries off the first cut
    # ends the run, as a network that stays down would.
    monkeypatch.setattr(_download, "DOWNLOAD_RETRY_TIMES", 0)
    server.cut_after = {BIG_FILE: 700_000}
    with pytest.raises(HubError, match="interrupted") as caught:
        hub.download("Demo/tiny-big")
    assert "Run the same download again" in str(caught.value)
    folder = hub.model_folder("Demo/tiny-big")
    assert (folder / (BIG_FILE + ".incomplete")).stat().st_size == 700_000
    assert hub.list_local_models()[0].complete is False

    server.cut_after, first_run = {}, len(server.requests)
    hub.download("Demo/tiny-big")
    rerun = [r for r in server.requests[first_run:] if "FilePath" in r.query]
    assert [(r.query["FilePath"], r.range) for r in rerun] == [(BIG_FILE, "bytes=700000-")]
    assert _same_files(big_model, folder)


def test_cancel_stops_the_client_threads_and_keeps_partial_files(server, big_model):
    server.delay = 0.02  # ~0.7 s for the big file
    threads_before = set(threading.enumerate())
    job = hub.DownloadJob("Demo/tiny-big").start()
    deadline = time.monotonic() + 20
    while not any(p.current_file == BIG_FILE and p.bytes_done for p in _progress(job)):
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
    hub.download("Demo/tiny-big")
    rerun = {r.query["FilePath"]: r.range for r in server.requests[first_run:] if "FilePath" in r.query}
    assert set(rerun) == unfinished and rerun[BIG_FILE] == f"bytes={partial_size}-"
    assert _same_files(big_model, job.folder)


def test_ctrl_c_in_the_cli_cancels_and_says_how_to_resume(server, capsys):
    server.delay = 0.05  # ~1.6 s for the big file
    timers = []

    def press_ctrl_c_soon(*args):
        # A real Ctrl-C: KeyboardInterrupt raised asynchronously in the main thread, wherever it is.
        if not timers:
            timers.append(threading.Timer(0.1, _thread.interrupt_main))
            timers[0].start()

    server.on_file_request = press_ctrl_c_soon
    # a process started in the background (nohup, `cmd &`) inherits SIGINT ignored, and interrupt_main
    # then does nothing: give the test the handler an interactive shell's Python has
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert _cli("download", "Demo/tiny-big") == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "download cancelled. Run the same download again" in capsys.readouterr().err
    assert (hub.model_folder("Demo/tiny-big") / (BIG_FILE + ".incomplete")).is_file()


def test_unknown_model_id_says_so(server):
    job = hub.DownloadJob("Demo/no-such-model")
    job.run()
    assert job.state == "failed"
    assert isinstance(job.events.last(), Failed)
    message = str(job.error)
    assert "Demo/no-such-model" in message and "no model with this id on ModelScope" in message
    assert not job.folder.exists()


def test_unreachable_endpoint_gives_the_offline_message_fast(monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(HubError, match="no network: cannot connect to ModelScope"):
        hub.download("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.monotonic() - started < 2


def test_a_hanging_dns_resolver_is_cut_short(monkeypatch):
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(5))
    started = time.monotonic()
    with pytest.raises(HubError, match="no network: cannot resolve modelscope.cn") as caught:
        hub.download("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.monotonic() - started < 2
    assert "MODELSCOPE_ENDPOINT" in str(caught.value)


def test_not_enough_disk_is_refused_before_downloading(server, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(HubError, match="not enough free disk"):
        hub.download("Demo/tiny-big")
    assert server.file_requests() == []


def test_hugging_face_offline_mode_is_reported(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.download("Qwen/Qwen2.5-0.5B-Instruct", source="huggingface")


@pytest.mark.parametrize("bad", ["", "just-a-name", "a/b/c", "/abs"])
def test_malformed_model_ids_are_rejected(bad):
    with pytest.raises(HubError, match="owner/name"):
        hub.DownloadJob(bad)


def test_model_folders_never_leave_the_workspace(workspace):
    for model_id in ("../..", "Qwen/../../etc", "a/.."):
        folder = hub.model_folder(model_id)
        assert folder.parent == (workspace / "models").resolve()


def test_check_model_folder_names_what_is_missing(tmp_path, tiny_model):
    assert hub.check_model_folder(tiny_model) == []
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    missing = hub.check_model_folder(folder)
    assert len(missing) == 2 and missing[0].startswith("tokenizer") and missing[1].startswith("weights")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}')
    (folder / "model-1.safetensors").write_bytes(b"x")
    (folder / "model-2.safetensors.incomplete").write_bytes(b"x")
    assert hub.check_model_folder(folder) == ["weights shard model-2.safetensors",
                                              "unfinished download model-2.safetensors"]


def test_tracker_counts_a_restarted_file_once():
    events = []
    tracker = ProgressTracker({"a": 100, "b": 50}, {"b": 50}, events.append, threading.Event())
    tracker.start_file("a")
    tracker.advance("a", 60)
    tracker.advance("a", -60)  # the client threw its partial file away and starts over
    tracker.start_file("a")
    tracker.advance("a", 100)
    tracker.finish()
    assert (events[-1].bytes_done, events[-1].bytes_total, events[-1].eta) == (150, 150, 0.0)


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="studio.py")
    cli_hub.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_download_then_models(server, capsys, workspace):
    assert _cli("models") == 0
    assert "No models in" in capsys.readouterr().out
    assert _cli("download", "Demo/tiny") == 0
    out, err = capsys.readouterr()
    assert "Downloading Demo/tiny from ModelScope" in out
    assert f"Saved to {workspace / 'models' / 'Demo--tiny'}" in out
    assert "100%" in err  # the tqdm bar ends full
    (workspace / "models" / "half").mkdir()
    (workspace / "models" / "half" / "config.json").write_text("{}")
    assert _cli("models") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "Demo/tiny" and lines[1].endswith("ready")
    assert lines[2].split()[0] == "half" and "incomplete: missing tokenizer" in lines[2]


def test_cli_download_rejects_an_unknown_source():
    with pytest.raises(SystemExit):
        _cli("download", "Qwen/Qwen3-0.6B", "--source", "github")


def test_log_events_reach_the_cli_during_a_cut_transfer(server):
    server.cut_after = {BIG_FILE: 700_000}
    seen = []
    hub.download("Demo/tiny-big", on_event=seen.append)
    assert any(isinstance(e, Log) and e.level == "warning" and BIG_FILE in e.message for e in seen)
