"""Issue 10 item 9: a pickle torch refuses is reported as such, never run, never an internal error.

Fault injection: model folders, adapter folders and checkpoints get pickles of several kinds in place
of their weights. The hostile ones would create a marker file if anything unpickled them with code
allowed. Every loader (model load, adapter attach in chat, the CLI chat, resume from a checkpoint) must
leave the marker absent and say the file is a pickle LoRA Studio does not open, which file, and what
to do, in both languages, without torch's advice to turn its protection off.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lora_studio import cli, models
from lora_studio.chat import ChatEngine
from lora_studio.config import RunConfig
from lora_studio.errors import ModelError, StudioError
from lora_studio.events import Failed, Finished
from lora_studio.workspace import Workspace

from .tiny_model_fixture import build_tiny_model, copy_model, interrupted_copy, train_tiny_run


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_plain(state: dict, file: Path, marker: Path) -> None:
    torch.save(state, file)


def write_hostile(state: dict, file: Path, marker: Path) -> None:
    torch.save({**state, "hidden": Payload(marker)}, file)


def write_hostile_legacy(state: dict, file: Path, marker: Path) -> None:
    torch.save({**state, "hidden": Payload(marker)}, file, _use_new_zipfile_serialization=False)


def write_raw_pickle(state: dict, file: Path, marker: Path) -> None:
    file.write_bytes(pickle.dumps(Payload(marker)))


def write_numpy(state: dict, file: Path, marker: Path) -> None:
    import numpy

    torch.save({**state, "extra": numpy.zeros(3)}, file)  # harmless, but not a plain tensor either


class Custom:
    """A harmless object of a class torch has not been told is safe."""


def write_custom_object(state: dict, file: Path, marker: Path) -> None:
    torch.save({**state, "extra": Custom()}, file)


def write_damaged_zip(state: dict, file: Path, marker: Path) -> None:
    """torch.save's zip archive, whole as an archive, with its pickle inside cut short."""
    import zipfile

    torch.save({**state, "step": 1}, file)
    with zipfile.ZipFile(file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(file, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data[: len(data) // 2] if name.endswith("data.pkl") else data)


def write_garbage(state: dict, file: Path, marker: Path) -> None:
    file.write_bytes(b"not a pickle at all " * 20)


def write_empty(state: dict, file: Path, marker: Path) -> None:
    file.write_bytes(b"")


# torch.save's zip archives (what a checkpoint's files are), and other files where one is expected
REFUSED_ZIP = {"hostile": write_hostile, "numpy-object": write_numpy, "custom-object": write_custom_object,
               "damaged-zip": write_damaged_zip}
REFUSED_OTHER = {"hostile-legacy-format": write_hostile_legacy, "raw-pickle": write_raw_pickle,
                 "garbage": write_garbage, "empty": write_empty}
REFUSED = {**REFUSED_ZIP, **REFUSED_OTHER}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pickles")
    model = build_tiny_model(root / "tiny")
    return model, train_tiny_run(model, Workspace(root / "workspace"))


def assert_explained(text_en: str, text_zh: str, file: Path, marker: Path, fix: str) -> None:
    assert not marker.exists(), "code in a pickle ran"
    assert "this file is a pickle" in text_en and "LoRA Studio loads only safetensors" in text_en, text_en
    assert str(file) in text_en and fix in text_en, text_en
    assert "这个文件是 Python 序列化文件（`pickle`）" in text_zh and ".safetensors" in text_zh, text_zh
    for text in (text_en, text_zh):
        assert "weights_only" not in text and "Weights only" not in text  # torch's advice to turn it off
        assert "Internal error" not in text and "internal error" not in text and "内部错误" not in text


def assert_error_explained(exc: StudioError, file: Path, marker: Path, fix: str) -> None:
    assert isinstance(exc, ModelError)
    assert_explained(exc.render("en"), exc.render("zh"), file, marker, fix)


# --- model weights -------------------------------------------------------------------------------
def pickled_model(tiny, tmp_path: Path, write, sharded: bool = False, keep_safetensors: bool = False):
    """A copy of the tiny model whose weights are a pickle written by `write`; (folder, file, marker)."""
    marker = tmp_path / "code-ran"
    folder = copy_model(tiny[0], tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    if not keep_safetensors:
        (folder / "model.safetensors").unlink()
    if sharded:  # the first shard is fine, the second is the bad one
        import json

        names = sorted(state)
        half = {0: names[: len(names) // 2], 1: names[len(names) // 2:]}
        files = [folder / f"pytorch_model-0000{i + 1}-of-00002.bin" for i in range(2)]
        torch.save({k: state[k] for k in half[0]}, files[0])
        write({k: state[k] for k in half[1]}, files[1], marker)
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: files[i].name for i in half for k in half[i]}}))
        return folder, files[1], marker
    write(state, folder / "pytorch_model.bin", marker)
    return folder, folder / "pytorch_model.bin", marker


def test_a_pickle_of_plain_tensors_loads(tiny, tmp_path, ws):
    """Index-1.9B ships pytorch_model.bin: torch's weights-only loader reads plain tensors safely."""
    folder, _file, marker = pickled_model(tiny, tmp_path, write_plain)
    loaded = models.load(RunConfig(model_name_or_path=str(folder)), ws)
    assert loaded.model.config.model_type == "llama" and not marker.exists()


@pytest.mark.parametrize("sharded", [False, True], ids=["one-file", "second-shard"])
@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_model_weights_are_explained(kind, sharded, tiny, tmp_path, ws):
    folder, file, marker = pickled_model(tiny, tmp_path, REFUSED[kind], sharded)
    with pytest.raises(StudioError) as raised:
        models.load(RunConfig(model_name_or_path=str(folder)), ws)
    assert_error_explained(raised.value, file, marker, "model.safetensors")


def test_safetensors_win_over_a_hostile_pickle_beside_them(tiny, tmp_path, ws):
    folder, _file, marker = pickled_model(tiny, tmp_path, write_hostile, keep_safetensors=True)
    models.load(RunConfig(model_name_or_path=str(folder)), ws)
    assert not marker.exists()


# --- adapters ------------------------------------------------------------------------------------
def pickled_adapter(tiny, tmp_path: Path, write, keep_safetensors: bool = False):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "adapter"
    shutil.copytree(tiny[1] / "adapter", folder)
    state = load_file(str(folder / "adapter_model.safetensors"))
    if not keep_safetensors:
        (folder / "adapter_model.safetensors").unlink()
    write(state, folder / "adapter_model.bin", marker)
    return folder, folder / "adapter_model.bin", marker


@pytest.fixture(scope="module")
def engine(tiny):
    engine = ChatEngine(Workspace(tiny[1].parent.parent))
    engine.load_base(RunConfig(model_name_or_path=str(tiny[0])))
    return engine


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_adapters_are_explained_in_chat(kind, tiny, engine, tmp_path):
    folder, file, marker = pickled_adapter(tiny, tmp_path, REFUSED[kind])
    with pytest.raises(StudioError) as raised:
        engine.set_adapter(folder)
    assert_error_explained(raised.value, file, marker, "adapter_model.safetensors")


@pytest.mark.parametrize("write,keep", [(write_plain, False), (write_hostile, True)], ids=["plain-bin", "beside"])
def test_adapters_in_plain_tensors_or_beside_safetensors_attach(write, keep, tiny, engine, tmp_path):
    folder, _file, marker = pickled_adapter(tiny, tmp_path, write, keep_safetensors=keep)
    engine.set_adapter(folder)
    assert engine.active_adapter is not None and not marker.exists()


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("kind", ["hostile", "garbage"])
def test_cli_chat_explains_a_refused_adapter(kind, lang, tiny, tmp_path, capsys):
    folder, file, marker = pickled_adapter(tiny, tmp_path, REFUSED[kind])
    code = cli.main(["chat", "--adapter", str(folder), "--model", str(tiny[0]), "--prompt", "你好", "--lang", lang])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and str(file) in err
    assert ("this file is a pickle" if lang == "en" else "这个文件是 Python 序列化文件") in err
    assert "weights_only" not in err and "Traceback" not in err


# --- checkpoints (resume) ------------------------------------------------------------------------
CHECKPOINT_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")  # what the Trainer's resume reads


def resume_with(tiny, tmp_path: Path, name: str, write):
    """Resume a copy of the tiny run whose checkpoint's `name` was written by `write`: (outcome, file, marker).

    The outcome is the JobError resume() raised, or the job's last Finished/Failed event.
    """
    from lora_studio.training import TrainingJob

    ws = Workspace(tmp_path / "workspace")
    run = interrupted_copy(tiny[1], ws.runs / "victim")
    file, marker = run / "checkpoints" / "checkpoint-1" / name, tmp_path / "code-ran"
    write({}, file, marker)
    try:
        job = TrainingJob.resume(run, ws).start()
    except StudioError as exc:
        return exc, file, marker
    assert job.join(120)
    return job.events.last(Failed) or job.events.last(Finished), file, marker


@pytest.mark.parametrize("kind", list(REFUSED_ZIP))
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_resume_explains_a_refused_checkpoint_file(name, kind, tiny, tmp_path):
    outcome, file, marker = resume_with(tiny, tmp_path, name, REFUSED_ZIP[kind])
    assert isinstance(outcome, Failed), outcome
    assert_explained(outcome.text.render("en"), outcome.text.render("zh"), file, marker,
                     "Move this checkpoint folder out of checkpoints/")


@pytest.mark.parametrize("kind", list(REFUSED_OTHER))
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_resume_never_opens_a_checkpoint_file_that_is_not_torchs_archive(name, kind, tiny, tmp_path):
    """Not the zip archive torch.save writes: the checkpoint is torn (checkpoints.py) and never read."""
    outcome, _file, marker = resume_with(tiny, tmp_path, name, REFUSED_OTHER[kind])
    assert not marker.exists()
    if isinstance(outcome, Finished):
        return  # resumed from a whole checkpoint instead
    shown = outcome.render("en") if isinstance(outcome, StudioError) else outcome.text.render("en")
    assert "weights_only" not in shown and "Internal error" not in shown and "internal error" not in shown, shown


@pytest.mark.parametrize("name", ["training_args.bin", "adapter_model.bin"])
def test_hostile_pickles_a_resume_does_not_read_are_never_opened(name, tiny, tmp_path):
    """The Trainer writes training_args.bin (a pickled object) and never reads it back; nor do we. An
    adapter_model.bin beside adapter_model.safetensors is never read either: safetensors come first."""
    from lora_studio.training import TrainingJob

    ws = Workspace(tmp_path / "workspace")
    run = interrupted_copy(tiny[1], ws.runs / "victim")
    marker = tmp_path / "code-ran"
    write_hostile({}, run / "checkpoints" / "checkpoint-1" / name, marker)
    job = TrainingJob.resume(run, ws).start()
    assert job.join(120)
    assert isinstance(job.events.last(Finished), Finished) and not marker.exists()


@pytest.mark.parametrize("folder_given", [True, False])
def test_errors_of_writing_are_not_mistaken_for_refused_pickles(folder_given, tmp_path):
    """torch.save lives beside torch.load: a failed save (a full disk) must keep its own message."""
    from lora_studio import pickles

    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    write_hostile({}, folder / "optimizer.pt", tmp_path / "code-ran")  # a scan would find this one
    with pytest.raises(RuntimeError, match="does not exist"):
        with pickles.explained(folder if folder_given else None, "checkpoint"):
            torch.save({"x": torch.zeros(1)}, tmp_path / "no-such-folder" / "optimizer.pt")
    assert not (tmp_path / "code-ran").exists()
