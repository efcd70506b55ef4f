"""Fixtures for the download tests: a fake ModelScope server serving a tiny model, and the client sandboxed.

No test touches the network: MODELSCOPE_ENDPOINT points at tests/modelscope_server.py on 127.0.0.1,
and the client's cache, lock and credential folders are redirected into the test's tmp_path. A test
module uses them with `from .hub_fixtures import *`.
"""

from __future__ import annotations

import filecmp
import random
import re
import shutil
from pathlib import Path

import pytest

from lora_studio import cli
from lora_studio.events import DownloadProgress
from lora_studio.hub_progress import ProgressTracker
from tests.modelscope_server import FakeModelScope

__all__ = ["BIG_FILE", "BIG_SIZE", "tiny_model", "big_model", "modelscope_sandbox", "server", "progress_events",
           "same_files", "run_cli", "without_bars", "break_progress"]


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


def progress_events(job) -> list[DownloadProgress]:
    return [e for e in job.events.all() if isinstance(e, DownloadProgress)]


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def run_cli(ws, *argv, lang="en") -> int:
    """`python studio.py ARGV` in this process (the fake server's thread and monkeypatches apply)."""
    return cli.main([*map(str, argv), "--workspace", str(ws.root), "--lang", lang])


def without_bars(err: str) -> str:
    """stderr less tqdm's redrawn progress lines (their speed and timing vary run to run)."""
    return "\n".join(line for line in err.replace("\r", "\n").splitlines() if line and "B/s" not in line
                     and not re.match(r"^(Downloading|下载中):", line))


def break_progress(monkeypatch):
    """A bug of ours in the code the client calls back from its worker threads: a TypeError."""
    from modelscope_hub import _download

    def broken(self, name, size):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    # the client would retry the 'failed' transfer with back-offs of seconds before giving up
    monkeypatch.setattr(_download, "DOWNLOAD_RETRY_TIMES", 0)
    monkeypatch.setattr(ProgressTracker, "advance", broken)
