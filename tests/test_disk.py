"""A full disk during training, the disk line of the pre-flight estimate, and workspaces we cannot write to.

A full disk is tried at many points: the n-th write of each kind of file a run writes (torch's zip
files, the adapter's safetensors, the Trainer's state, events.jsonl, config.yaml) starts failing as a
full disk fails it, and from then on every write fails, error.log included, until space is freed.
On a machine where the tests may mount a small tmpfs the same is tried with a really full disk.
"""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.checkpoints import STAGING, adapter_is_complete, is_complete
from lora_studio.errors import JobError
from lora_studio.events import Failed, Finished, Progress, read_events
from lora_studio.runs import latest_checkpoint
from lora_studio.training import TrainingJob

from .test_crash_safety import ROOT, finished_run, run_to_end, small_config  # noqa: F401 - a fixture

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # what torch.save says
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


class FullDisk:
    """Writers that fail as on a full disk from the k-th write of one kind on, until `free()`."""

    def __init__(self, monkeypatch, kind: str, nth: int):
        import peft.peft_model
        import torch
        from safetensors import SafetensorError
        from transformers.trainer_callback import TrainerState

        import lora_studio.disk
        import lora_studio.files
        import lora_studio.training

        self.kind, self.nth, self.seen, self.full, self.freed = kind, nth, 0, False, False

        def failing(kind, write, error):
            def wrapper(*args, **kwargs):
                if self.hits(kind):
                    target = next((a for a in args if isinstance(a, (str, Path))), None)
                    if target is not None and kind in ("torch", "safetensors"):
                        Path(target).write_bytes(b"PK\x03\x04")  # what got out before the disk filled up
                    raise error()
                return write(*args, **kwargs)
            return wrapper

        def no_space():
            return OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", failing("torch", torch.save, lambda: RuntimeError(TORCH_FULL)))
        monkeypatch.setattr(peft.peft_model, "safe_save_file", failing(
            "safetensors", peft.peft_model.safe_save_file, lambda: SafetensorError(SAFETENSORS_FULL)))
        monkeypatch.setattr(TrainerState, "save_to_json", failing("state", TrainerState.save_to_json, no_space))
        atomic = failing("text", lora_studio.files.write_text_atomic, no_space)
        monkeypatch.setattr(lora_studio.files, "write_text_atomic", atomic)
        monkeypatch.setattr(lora_studio.training, "write_text_atomic", atomic)
        opened = Path.open

        def open_events(path, mode="r", *args, **kwargs):
            if path.name == "events.jsonl" and "a" in mode and self.hits("events"):
                raise no_space()
            return opened(path, mode, *args, **kwargs)

        monkeypatch.setattr(Path, "open", open_events)
        measured = lora_studio.disk.free_bytes
        free = lambda path: 4096 if self.full else measured(path)  # noqa: E731 - the disk's free space
        monkeypatch.setattr(lora_studio.disk, "free_bytes", free)

    def hits(self, kind: str) -> bool:
        if self.freed:
            return False
        if kind == self.kind:
            self.seen += 1
            self.full = self.full or self.seen >= self.nth
        return self.full

    def free(self) -> None:
        self.freed, self.full = True, False


# (the kind of write that first meets the full disk, which one of them): a 6-step run saving at 2, 4 and 6
# writes 4 torch files and 1 safetensors a checkpoint, plus the final adapter's safetensors
FULL_AT = [("torch", n) for n in (1, 2, 3, 4, 5, 8, 12)] + [("safetensors", n) for n in (1, 2, 4)] + \
          [("state", 1), ("state", 3), ("events", 1), ("events", 2), ("events", 6), ("events", 14), ("text", 1)]


@pytest.mark.parametrize("kind,nth", FULL_AT)
def test_a_full_disk_is_reported_as_one_and_the_run_resumes_once_space_is_freed(monkeypatch, demo_model_dir, ws,
                                                                               kind, nth):
    disk = FullDisk(monkeypatch, kind, nth)
    job = TrainingJob(small_config(demo_model_dir, max_steps=6, save_steps=2, run_name="full"), ws)
    try:
        end = run_to_end(job)
        message = end.text.render("en")
        assert isinstance(end, Failed), message
    except JobError as exc:  # full before the run began (config.yaml): refused at start, nothing ran
        assert (kind, nth) == ("text", 1)
        message = exc.render("en")
    run_dir = ws.runs / "full"
    assert message.startswith(f"{run_dir}: the disk is full (4.1 KB free)"), message
    assert "enforce fail" not in message and "Internal error" not in message
    assert "error.log could not be written either (the disk is full)." in message
    assert not (run_dir / "error.log").exists()  # no empty error.log either
    if "a checkpoint of this run needs about" in message:
        assert "Free at least " in message
    assert not list((run_dir / "checkpoints" / STAGING).glob("*"))  # the partial checkpoint is set aside
    assert all(is_complete(p) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    torn = [p for p in (run_dir / "checkpoints").glob("torn-*")]
    assert ("set aside as" in message) == bool(torn) and all(str(p) in message for p in torn[-1:])
    disk.free()
    if latest_checkpoint(run_dir) is None:  # nothing saved yet: the message said to start again
        assert "then start the run again." in message
        return
    assert "then continue the run: python studio.py train --resume full." in message
    resumed = TrainingJob.resume("full", ws)
    assert isinstance(run_to_end(resumed), Finished)
    steps = [e.step for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress)]
    assert steps == list(range(1, 7)) and adapter_is_complete(run_dir / "adapter")


# --- a really full disk: a small tmpfs mounted over the runs folder --------------------------------
def mount_tmpfs(folder: Path, options: str) -> None:
    """Mount a tmpfs (root only, Linux); the test is skipped where that is not allowed."""
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("this machine does not let the tests mount a tmpfs")


@pytest.fixture
def small_disk(ws):
    ws.runs.mkdir(parents=True)
    mounted = []

    def mount(size: str):
        mount_tmpfs(ws.runs, f"remount,size={size}" if mounted else f"size={size}")
        mounted.append(size)

    yield mount
    if mounted:
        subprocess.run(["umount", str(ws.runs)], check=True)


@pytest.mark.parametrize("size", ["4k", "8k", "40k", "300k", "700k", "1100k", "1460k", "2300k"])
def test_a_really_full_disk_at_many_points(small_disk, demo_model_dir, ws, size):
    small_disk(size)
    job = TrainingJob(small_config(demo_model_dir, max_steps=8, save_steps=2, save_total_limit=2, run_name="r"), ws)
    try:
        end = run_to_end(job)
        message = end.message
    except JobError as exc:
        end, message = None, exc.render("en")
    run_dir = ws.runs / "r"
    if isinstance(end, Finished):  # it fit after all: nothing to check but that it is whole
        assert adapter_is_complete(run_dir / "adapter")
        return
    assert f"{run_dir}: the disk is full (" in message and "Internal error" not in message, message
    assert ("Details: " in message) == (run_dir / "error.log").is_file()
    if (run_dir / "error.log").exists():
        assert (run_dir / "error.log").stat().st_size > 0
    assert not list((run_dir / "checkpoints" / STAGING).glob("*"))
    assert all(is_complete(p) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    small_disk("16m")
    if latest_checkpoint(run_dir) is None:
        return
    assert isinstance(run_to_end(TrainingJob.resume(run_dir, ws)), Finished)
    steps = [e.step for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress)]
    assert steps == list(range(1, 9)) and adapter_is_complete(run_dir / "adapter")


def test_the_cli_says_the_disk_is_full_without_a_traceback(small_disk, demo_model_dir, ws, workspace, tmp_path):
    from lora_studio.config import save_yaml

    small_disk("700k")
    config = tmp_path / "full.yaml"
    save_yaml(small_config(demo_model_dir, max_steps=8, save_steps=2, run_name="cli"), config)
    env = {**os.environ, "LORA_STUDIO_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "studio.py", "train", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    error = done.stderr.splitlines()[-1]
    assert error.startswith(f"error: {ws.runs / 'cli'}: the disk is full (") and "needs about" in error
    assert "Traceback" not in done.stderr and "enforce fail" not in done.stderr


# --- the pre-flight estimate's disk line ------------------------------------------------------------
@pytest.mark.parametrize("steps,save_steps,limit,kept", [(10, 2, 3, 4), (10, 3, 0, 4), (10, 20, 2, 1), (10, 5, 1, 2),
                                                         (12, 3, 0, 4), (12, 3, 2, 3), (1, 1, 1, 1), (9, 4, 0, 3)])
def test_the_dry_run_counts_the_checkpoints_on_disk(monkeypatch, demo_model_dir, ws, steps, save_steps, limit, kept):
    from lora_studio.estimate import dry_run

    report = dry_run(small_config(demo_model_dir, max_steps=steps, save_steps=save_steps, save_total_limit=limit), ws)
    assert report.disk.kept == kept and report.disk.total == kept * report.disk.checkpoint + report.disk.adapter
    line = next(line.render("en") for line in report.lines() if line.key == "estimate.disk")
    assert f", up to {kept} at once, " in line and line.endswith(f"free at {ws.runs}")
    assert not any(line.key == "estimate.disk_short" for line in report.lines())


@pytest.mark.parametrize("free", [0, 1000, 500_000, 1_500_000])
def test_the_dry_run_warns_when_the_checkpoints_will_not_fit(monkeypatch, demo_model_dir, ws, free):
    import lora_studio.disk
    from lora_studio.estimate import dry_run

    monkeypatch.setattr(lora_studio.disk, "free_bytes", lambda path: free)
    report = dry_run(small_config(demo_model_dir, max_steps=12, save_steps=3, save_total_limit=0), ws)
    warning = [line for line in report.lines() if line.key == "estimate.disk_short"]
    assert len(warning) == 1 and "Free some space, or raise save_steps or lower save_total_limit" in \
        warning[0].render("en") and "磁盘空间不够" in warning[0].render("zh")


def test_a_starting_run_warns_when_its_checkpoints_will_not_fit(monkeypatch, demo_model_dir, ws):
    import lora_studio.disk

    monkeypatch.setattr(lora_studio.disk, "free_bytes", lambda path: 100_000)
    job = TrainingJob(small_config(demo_model_dir, max_steps=2, save_steps=1), ws)
    assert isinstance(run_to_end(job), Finished)
    warned = [e.message for e in job.events.all() if getattr(e, "level", "") == "warning"]
    assert any(line.startswith("The disk may not hold this run") for line in warned)


def test_the_checkpoint_estimate_matches_a_real_checkpoint(finished_run, demo_model_dir):
    from lora_studio.disk import checkpoint_bytes, folder_bytes, tokenizer_bytes

    real = folder_bytes(finished_run / "checkpoints" / "checkpoint-12")
    trainable = 23_552  # the tiny demo model's LoRA parameters at r=8, all linear layers
    estimated = checkpoint_bytes(trainable, tokenizer_bytes(demo_model_dir))
    assert abs(estimated - real) < 0.1 * real, (estimated, real)
