"""`train --resume RUN` is one clear command: no config needed, only what a resume can change is applied
(and said), anything else is refused by name, invalid values are errors, and a failed resume keeps
the run's real step."""

import json
import shutil
from pathlib import Path

import pytest

from lora_studio.cli import main
from lora_studio.config import load_yaml, save_yaml
from lora_studio.errors import ConfigError
from lora_studio.events import Failed, Finished, Progress, read_events
from lora_studio.runs import read_run
from lora_studio.training import TrainingJob

from .test_crash_safety import finished_run, interrupted_copy, progress_steps, run_to_end, small_config  # noqa: F401


def killed_after(finished_run: Path, ws, step: int, name: str = "run") -> Path:
    """The run as a kill -9 leaves it just before its save at `step` + 3: later steps logged, not saved."""
    run_dir = interrupted_copy(finished_run, ws, name)
    for checkpoint in (run_dir / "checkpoints").glob("checkpoint-*"):
        if int(checkpoint.name.split("-")[1]) > step:
            shutil.rmtree(checkpoint)
    return run_dir


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("how", ["name", "folder"])
def test_resume_needs_only_the_run(finished_run, ws, capsys, how):
    run_dir = killed_after(finished_run, ws, 6)
    assert progress_steps(run_dir)[-1] == 12  # the killed session logged steps 7-12, saved none of them
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", "--resume",
                         "run" if how == "name" else str(run_dir))
    assert code == 0, err
    assert "Resuming from checkpoint-6 (step 6)" in out and "Run completed at step 12" in out
    assert "Changed for the rest of the run" not in out
    assert progress_steps(run_dir) == list(range(1, 13))  # the replayed steps replaced the lost ones


def test_a_run_killed_after_its_last_save_gets_its_adapter_without_training_more(finished_run, ws, capsys):
    run_dir = interrupted_copy(finished_run, ws, "run")
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", "--resume", "run")
    assert code == 0, err
    assert "All 12 steps were trained and saved before the interruption; the adapter is taken from checkpoint-12" \
        in out and "Run completed at step 12" in out
    assert progress_steps(run_dir) == list(range(1, 13)) and (run_dir / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("assignments,said,check", [
    (["max_steps=16"], ["max_steps 12 → 16"], "sixteen"),
    (["save_steps=4", "save_total_limit=1"], ["save_steps 3 → 4", "save_total_limit 0 → 1"], "one checkpoint"),
    (["logging_steps=1"], ["logging_steps 2 → 1"], "every loss"),
    (["max_steps=-1", "num_train_epochs=1.5"], ["num_train_epochs 3.0 → 1.5", "max_steps 12 → -1"], "epochs"),
    (["max_steps=12", "learning_rate=0.003"], [], "nothing"),  # the values it already has: no change
])
def test_what_a_resume_may_change_is_applied_and_said(finished_run, ws, capsys, assignments, said, check):
    run_dir = killed_after(finished_run, ws, 6)
    sets = [arg for item in assignments for arg in ("--set", item)]
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", "--resume", "run", *sets)
    assert code == 0, err
    changed = [line.removeprefix("Changed for the rest of the run: ") for line in out.splitlines()
               if line.startswith("Changed for the rest of the run: ")]
    assert changed == said
    config = load_yaml(run_dir / "config.yaml")  # a later resume continues with them
    progress = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress)]
    if check == "sixteen":
        assert config.max_steps == 16 and [e.step for e in progress] == list(range(1, 17))
    elif check == "one checkpoint":
        assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-12"]
        assert json.loads((run_dir / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())[
            "save_steps"] == 4
    elif check == "every loss":
        assert all(e.loss is not None for e in progress if e.step > 6)
    elif check == "epochs":
        assert "Run completed at step 15" in out and config.max_steps == -1  # 1.5 x 10 steps an epoch
    else:
        assert "Run completed at step 12" in out


@pytest.mark.parametrize("assignment", ["learning_rate=0.001", "r=16", "per_device_train_batch_size=4",
                                        "gradient_accumulation_steps=2", "seed=7", "cutoff_len=32", "lora_alpha=8",
                                        "lora_dropout=0.1", "target_modules=[q_proj]", "run_name=other",
                                        "model_name_or_path=elsewhere", "lr_scheduler_type=linear",
                                        "data_files=[other.json]", "dtype=float32", "val_size=0.2",
                                        "warmup_steps=2", "use_dora=true", "system_prompt=hi"])
def test_anything_else_is_refused_by_name(finished_run, ws, capsys, assignment):
    run_dir = killed_after(finished_run, ws, 6)
    key = assignment.split("=")[0]
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", "--resume", "run", "--set", assignment)
    assert code == 2 and err.startswith(f"error: {key}: {key} cannot change when a run resumes. ")
    assert "only max_steps, num_train_epochs, logging_steps, save_steps, save_total_limit can change" in err
    assert progress_steps(run_dir)[-1] == 12 and read_run(run_dir).status == "interrupted"  # nothing ran


@pytest.mark.parametrize("assignment,error", [
    ("max_steps=abc", "'max_steps' must be a number, got 'abc'"),
    ("max_steps=-5", "'max_steps' is -5, outside the allowed range"),
    ("save_steps=0", "'save_steps' is 0, outside the allowed range"),
    ("logging_steps=1.5", "'logging_steps' must be a whole number, got 1.5"),
    ("save_total_limit=-1", "'save_total_limit' is -1, outside the allowed range"),
    ("foo=1", "unknown setting 'foo'"),
    ("max_steps=6", "max_steps: max_steps 6 is not beyond step 6, where the run resumes"),
    ("max_steps=3", "max_steps: max_steps 3 is not beyond step 6, where the run resumes"),
    ("num_train_epochs=5", "num_train_epochs: this run trains for max_steps (12), so num_train_epochs has no effect"),
    ("max_steps", "--set"),
])
def test_invalid_values_are_errors(finished_run, ws, capsys, assignment, error):
    killed_after(finished_run, ws, 6)
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", "--resume", "run", "--set", assignment)
    assert code == 2 and err.startswith("error: ") and error in err and "Internal error" not in err


def test_a_config_given_with_resume_changes_only_what_differs(finished_run, ws, capsys, demo_model_dir, tmp_path):
    killed_after(finished_run, ws, 6)
    same, longer, other = tmp_path / "same.yaml", tmp_path / "longer.yaml", tmp_path / "other.yaml"
    save_yaml(small_config(demo_model_dir), same)  # what the run was started with (relative paths, no name)
    save_yaml(small_config(demo_model_dir, max_steps=14), longer)
    save_yaml(small_config(demo_model_dir, learning_rate=1e-3, r=4), other)
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", str(other), "--resume", "run")
    assert code == 2 and err.startswith("error: r: r, learning_rate cannot change when a run resumes."), err
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", str(longer), "--resume", "run")
    assert code == 0 and "Changed for the rest of the run: max_steps 12 → 14" in out and \
        "Run completed at step 14" in out
    killed_after(finished_run, ws, 6, "again")
    code, out, err = cli(capsys, "--workspace", str(ws.root), "train", str(same), "--resume", "again")
    assert code == 0 and "Changed for the rest of the run" not in out


@pytest.mark.parametrize("args,error", [
    (["train"], "error: train: no preset or YAML config to train. For example: python studio.py train demo-tiny"),
    (["train", "--resume", "nosuch"], "error: {runs}: no run nosuch. Give a run folder's path"),
    (["train", "--resume", "nosuch", "--dry-run"], "error: {runs}: no run nosuch."),
])
def test_what_to_train_is_asked_for_clearly(ws, capsys, args, error):
    code, out, err = cli(capsys, "--workspace", str(ws.root), *args)
    assert code == 2 and err.startswith(error.format(runs=ws.runs))


def test_the_studio_uses_the_same_rule(finished_run, ws):
    from lora_studio.resume import RESUMABLE_SETTINGS, overrides_from_config

    run_dir = killed_after(finished_run, ws, 6)
    saved = load_yaml(run_dir / "config.yaml")
    with pytest.raises(ConfigError, match="learning_rate cannot change when a run resumes"):
        TrainingJob.resume("run", ws, overrides={"learning_rate": 1.0})
    form = saved.replace(run_name="", max_steps=13)  # a whole form: unchanged fields are no change
    job = TrainingJob.resume(run_dir, ws, overrides=overrides_from_config(saved, form))
    assert job.changes == {"max_steps": (12, 13)} and "max_steps" in RESUMABLE_SETTINGS
    assert isinstance(run_to_end(job), Finished) and job.current_step() == 13


@pytest.mark.parametrize("where", ["at the first step", "while loading the model"])
def test_a_failed_resume_keeps_the_runs_real_step(finished_run, ws, where):
    from transformers import TrainerCallback

    from lora_studio.runs import latest_checkpoint

    class Boom(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            raise RuntimeError("simulated crash")

    run_dir = killed_after(finished_run, ws, 6)
    saved = load_yaml(run_dir / "config.yaml")
    if where == "while loading the model":  # e.g. the model folder was moved away since
        save_yaml(saved.replace(model_name_or_path="/nowhere/model"), run_dir / "config.yaml")
    end = run_to_end(TrainingJob.resume("run", ws, callbacks=[Boom()]))
    assert isinstance(end, Failed) and end.step == 6, end.message
    job = TrainingJob.resume("run", ws, callbacks=[Boom()])
    run_to_end(job)
    first = job.events.all()[0]  # what a live view shows first: the step the run is at, of its total
    assert isinstance(first, Progress) and (first.step, first.total_steps) == (6, 12)
    info = read_run(run_dir)
    assert info.status == "failed" and (info.step, info.total_steps) == (6, 12)
    assert latest_checkpoint(run_dir).name == "checkpoint-6"  # still offered, and a resume that works ends it
    save_yaml(saved, run_dir / "config.yaml")
    assert isinstance(run_to_end(TrainingJob.resume("run", ws)), Finished)
    assert progress_steps(run_dir) == list(range(1, 13))
