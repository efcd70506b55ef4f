"""Crash-safe checkpoints: a torn checkpoint is never resumed from nor deleted, and a run killed at random
moments (inside saves too) resumes every time and finishes with one loss value a step."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.checkpoints import (STAGING, adapter_is_complete, complete_checkpoints, is_complete, rotate,
                                     set_aside_torn)
from lora_studio.config import RunConfig, save_yaml
from lora_studio.events import Evaluation, Failed, Finished, Log, Progress, drop_steps_after, read_events
from lora_studio.runs import adapter_dirs, latest_checkpoint, read_run
from lora_studio.training import TrainingJob

ROOT = Path(__file__).resolve().parent.parent
PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"
TORN_FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
              "training_args.bin", "trainer_state.json")


def small_config(model_dir, **changes) -> RunConfig:
    """A run of the tiny demo model that takes about a second: 12 steps, a checkpoint every 3."""
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=64,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=12, save_steps=3,
                  save_total_limit=0, logging_steps=2, learning_rate=3e-3, lr_scheduler_type="constant",
                  lora_dropout=0.0, seed=3)
    values.update(changes)
    return RunConfig(**values)


def run_to_end(job: TrainingJob, timeout: float = 120):
    assert job.start() is job and job.join(timeout), "training did not end in time"
    return job.events.last(Finished) or job.events.last(Failed)


def progress_steps(run_dir: Path) -> list[int]:
    return [e.step for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress)]


def log_lines(job: TrainingJob) -> list[str]:
    return [e.message for e in job.events.all() if isinstance(e, Log)]


@pytest.fixture(scope="module")
def finished_run(demo_model_dir, tmp_path_factory):
    """A completed 12-step run with checkpoints 3, 6, 9 and 12 (tests copy it)."""
    from lora_studio.workspace import Workspace

    job = TrainingJob(small_config(demo_model_dir, run_name="base"), Workspace(tmp_path_factory.mktemp("ws")))
    assert isinstance(run_to_end(job), Finished)
    return job.run_dir


def interrupted_copy(finished_run: Path, ws, name: str = "copy") -> Path:
    """The finished run as a kill -9 right after its last save leaves it: no end event, no final adapter."""
    run_dir = ws.runs / name
    shutil.copytree(finished_run, run_dir)
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if json.loads(line)["kind"] != "finished"]
    (run_dir / "events.jsonl").write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    shutil.rmtree(run_dir / "adapter")
    config = (run_dir / "config.yaml").read_text(encoding="utf-8").replace("run_name: base", f"run_name: {name}")
    (run_dir / "config.yaml").write_text(config, encoding="utf-8")
    return run_dir


def tear(checkpoint: Path, file_name: str, how: str) -> None:
    """Leave one file of a checkpoint as a crash or a full disk would: missing, empty or cut in half."""
    file = checkpoint / file_name
    if how == "missing":
        file.unlink()
    elif how == "empty":
        file.write_bytes(b"")
    else:
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])


TEAR_CASES = [(name, how) for name in TORN_FILES for how in ("missing", "empty", "half")]


def test_a_finished_run_has_only_whole_checkpoints_and_nothing_half_saved(finished_run):
    names = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    assert names == ["checkpoint-12", "checkpoint-3", "checkpoint-6", "checkpoint-9"]  # no staging folder left
    assert all(is_complete(p) for p in (finished_run / "checkpoints").iterdir())
    assert adapter_is_complete(finished_run / "adapter")
    assert [p.name for p in adapter_dirs(finished_run)] == ["adapter", "checkpoint-12", "checkpoint-9",
                                                            "checkpoint-6", "checkpoint-3"]


@pytest.mark.parametrize("file_name,how", TEAR_CASES + [("trainer_state.json", "wrong step"),
                                                         ("", "still in staging")])
def test_a_torn_checkpoint_is_not_offered_and_is_set_aside_whole(finished_run, ws, file_name, how):
    run_dir = interrupted_copy(finished_run, ws)
    newest = run_dir / "checkpoints" / "checkpoint-12"
    if how == "wrong step":
        state = json.loads((newest / file_name).read_text())
        (newest / file_name).write_text(json.dumps({**state, "global_step": 11}))
    elif how == "still in staging":  # killed before the rename that publishes it
        (run_dir / "checkpoints" / STAGING).mkdir()
        newest = newest.rename(run_dir / "checkpoints" / STAGING / "checkpoint-12")
    else:
        tear(newest, file_name, how)
    left = sorted(p.name for p in newest.iterdir())
    assert latest_checkpoint(run_dir).name == "checkpoint-9"
    assert "checkpoint-12" not in [p.name for p in adapter_dirs(run_dir)]
    moved = set_aside_torn(run_dir)
    assert len(moved) == 1 and moved[0].parent == run_dir / "checkpoints"
    assert moved[0].name.startswith("torn-checkpoint-12-")
    assert sorted(p.name for p in moved[0].iterdir()) == left  # set aside, nothing in it deleted
    assert [p.name for p in complete_checkpoints(run_dir / "checkpoints")] == \
        ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    assert not newest.exists() and set_aside_torn(run_dir) == []


@pytest.mark.parametrize("file_name,how", [("optimizer.pt", "missing"), ("adapter_model.safetensors", "half"),
                                           ("trainer_state.json", "empty")])
def test_resume_skips_a_torn_checkpoint_says_so_and_finishes(finished_run, ws, file_name, how):
    run_dir = interrupted_copy(finished_run, ws)
    tear(run_dir / "checkpoints" / "checkpoint-12", file_name, how)
    assert read_run(run_dir).status == "interrupted"
    job = TrainingJob.resume("copy", ws)  # a run's name is enough
    end = run_to_end(job)
    assert isinstance(end, Finished) and end.status == "completed" and end.step == 12
    logged = log_lines(job)
    torn = [line for line in logged if line.startswith("A checkpoint left unfinished by an interruption")]
    assert len(torn) == 1 and "torn-checkpoint-12-" in torn[0] and "(not deleted)" in torn[0]
    assert "Resuming from checkpoint-9 (step 9)" in logged
    assert progress_steps(run_dir) == list(range(1, 13))  # steps 10-12 once, from the new session
    assert all(is_complete(p) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert latest_checkpoint(run_dir).name == "checkpoint-12" and adapter_is_complete(run_dir / "adapter")


def test_rotation_removes_only_older_whole_checkpoints(finished_run, ws):
    run_dir = interrupted_copy(finished_run, ws)
    folder = run_dir / "checkpoints"
    tear(folder / "checkpoint-12", "optimizer.pt", "missing")
    rotate(folder, 1)  # a torn newer one must not count as the one to keep
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-12", "checkpoint-9"]
    assert is_complete(folder / "checkpoint-9")
    # a rotation killed between its rename and its delete leaves an older copy: finished off, not resumed
    (folder / "checkpoint-9").rename(folder / ".deleting-checkpoint-9")
    shutil.copytree(finished_run / "checkpoints" / "checkpoint-9", folder / "checkpoint-9")
    set_aside_torn(run_dir)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("torn-")) == ["checkpoint-9"]


@pytest.mark.parametrize("limit,kept", [(1, ["checkpoint-12"]), (2, ["checkpoint-12", "checkpoint-9"])])
def test_save_total_limit_keeps_the_newest_whole_checkpoints(demo_model_dir, ws, limit, kept):
    job = TrainingJob(small_config(demo_model_dir, save_total_limit=limit), ws)
    assert isinstance(run_to_end(job), Finished)
    assert sorted(p.name for p in (job.run_dir / "checkpoints").iterdir()) == sorted(kept)
    assert all(is_complete(job.run_dir / "checkpoints" / name) for name in kept)


@pytest.mark.parametrize("resume_at", [0, 1, 5, 12, 17])
def test_steps_replayed_after_a_resume_replace_the_lost_ones(tmp_path, resume_at):
    from lora_studio.events import EventLog
    from lora_studio.i18n import msg

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.emit(Log(msg("training.loading_model", model="m")))
    for step in range(1, 18):
        log.emit(Progress(step=step, total_steps=20, epoch=0.0, loss=float(step)))
        if step % 5 == 0:
            log.emit(Evaluation(step=step, eval_loss=1.0))
    with path.open("a", encoding="utf-8") as out:
        out.write('{"kind": "progress", "step": 18, "tot')  # killed mid-line
    kept = drop_steps_after(path, resume_at)
    assert [e.step for e in kept if isinstance(e, Progress)] == list(range(1, resume_at + 1))
    assert [e.step for e in kept if isinstance(e, Evaluation)] == [s for s in (5, 10, 15) if s <= resume_at]
    EventLog(path).emit(Progress(step=resume_at + 1, total_steps=20, epoch=0.0, loss=-1.0))
    events = read_events(path)
    assert isinstance(events[0], Log) and [e.step for e in events if isinstance(e, Progress)] == \
        list(range(1, resume_at + 2))  # the replayed step is read back: it started on a line of its own


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks a child per kill")
def test_killed_at_random_moments_many_times_every_resume_finishes(demo_model_dir, workspace, tmp_path):
    """SIGKILL `studio.py train` 14 times (at random times and inside saves), resume after each kill."""
    config = tmp_path / "crash.yaml"
    save_yaml(small_config(demo_model_dir, max_steps=2000, save_steps=4, save_total_limit=2), config)
    env = {**os.environ, "LORA_STUDIO_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    report = tmp_path / "report.json"
    seed = random.randrange(1 << 20)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "crash_harness.py"), str(config), "crash", "14",
                           str(seed), str(report)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = json.loads(report.read_text())
    context = f"seed {seed}: " + json.dumps(rounds)[-3000:]
    kills = [r for r in rounds if r["killed"]]
    assert len(kills) >= 14 and {r["mode"] for r in kills} >= {"save"}, context
    assert sum(bool(r["folder"]["staging"]) for r in kills) >= 3, context  # kills that tore a save in progress
    newest = 0
    for result in rounds:
        folder = result["folder"]
        assert folder["checkpoints"] == sorted(folder["whole"]), context  # only whole ones carry the name
        if result.get("before_first_checkpoint"):  # nothing to resume yet: said so, and started again
            assert result["exit"] == 2, context
            newest = 0
        elif result["killed"]:
            assert (folder["newest"] or 0) >= newest, context  # rotation never lost the newest whole one
            newest = folder["newest"] or 0
    run_dir = workspace / "runs" / "crash"
    total = newest + 6
    final = subprocess.run([sys.executable, "studio.py", "train", "--resume", "crash", "--set", f"max_steps={total}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, context + final.stderr[-3000:]
    assert f"Resuming from checkpoint-{newest} (step {newest})" in final.stderr + final.stdout
    assert f"Changed for the rest of the run: max_steps 2000 → {total}" in final.stderr + final.stdout
    assert f"Run completed at step {total}" in final.stdout
    assert progress_steps(run_dir) == list(range(1, total + 1)), context  # one value a step, none missing
    assert read_run(run_dir).status == "completed" and not (run_dir / "checkpoints" / STAGING).exists()
    torn = [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("torn-")]
    said = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, Log)
            and e.text.key == "training.torn_set_aside"]
    assert len(said) == len(torn)  # every torn checkpoint was set aside, and the log said where
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_model_dir)),
                                      str(run_dir / "adapter"))
    assert any("lora_A" in name for name, _ in model.named_parameters())
