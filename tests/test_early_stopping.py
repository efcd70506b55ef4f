"""Early stopping on the validation loss: it stops the run, says so, keeps the best adapter, and is
refused without a validation split. One tiny run on the demo model overfits the palace Q&A on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio.config import RunConfig, Setting
from lora_studio.errors import ConfigError
from lora_studio.events import EarlyStopped, Evaluation, Finished, Log, read_events
from lora_studio.training import TrainingJob
from lora_studio.workspace import Workspace

PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"
MAX_STEPS = 80


def overfit_config(model_dir, **changes) -> RunConfig:
    """A learning rate so high that the held-out answers get worse within a few evaluations."""
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=128, lora_dropout=0.0,
                  learning_rate=3e-2, lr_scheduler_type="constant", per_device_train_batch_size=4,
                  gradient_accumulation_steps=1, max_steps=MAX_STEPS, logging_steps=4, save_steps=4,
                  save_total_limit=2, val_size=0.3, early_stopping_patience=2, seed=1, run_name="overfit")
    values.update(changes)
    return RunConfig(**values)


@pytest.fixture(scope="session")
def stopped_run(demo_model_dir, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("early-stopping"))
    job = TrainingJob(overfit_config(demo_model_dir), ws).start()
    assert job.join(120), "the run did not finish"
    end = job.events.last(Finished)
    assert isinstance(end, Finished), job.events.all()[-3:]
    return job


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_the_run_stops_once_validation_loss_stops_improving(stopped_run):
    events = read_events(stopped_run.run_dir / "events.jsonl")
    stops = [e for e in events if isinstance(e, EarlyStopped)]
    evaluations = [e for e in events if isinstance(e, Evaluation)]
    assert len(stops) == 1, evaluations
    stop, end = stops[0], events[-1]
    assert isinstance(end, Finished) and end.status == "completed"
    assert end.step == stop.step < MAX_STEPS
    best = min(evaluations, key=lambda e: e.eval_loss)
    assert (stop.best_step, stop.best_eval_loss) == (best.step, best.eval_loss)
    # patience 2: the two evaluations after the best were no better, and there were no more
    assert [e.step for e in evaluations if e.step > best.step] == [best.step + 4, best.step + 8]
    assert stop.step == best.step + 8
    logged = [e.text.key for e in events if isinstance(e, Log)]
    assert {"training.early_stopping_on", "training.early_stopped", "training.best_adapter"} <= set(logged)
    line = next(e.text for e in events if isinstance(e, Log) and e.text.key == "training.early_stopped")
    assert f"第 {stop.step} 步停止" in line.render("zh") and f"step {best.step}" in line.render("en")


def test_the_final_adapter_is_the_best_checkpoint(stopped_run):
    import json

    import torch

    events = read_events(stopped_run.run_dir / "events.jsonl")
    stop = next(e for e in events if isinstance(e, EarlyStopped))
    checkpoints = stopped_run.run_dir / "checkpoints"
    best, last = checkpoints / f"checkpoint-{stop.best_step}", checkpoints / f"checkpoint-{stop.step}"
    # save_total_limit 2 keeps the best beside the newest, however old the best is
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted([best.name, last.name])
    final, kept, newest = weights(stopped_run.run_dir / "adapter"), weights(best), weights(last)
    assert final.keys() == kept.keys()
    assert all(torch.equal(final[name], kept[name]) for name in final)
    assert not all(torch.equal(final[name], newest[name]) for name in final)
    # the saved state names the published folder (a resume keeps it), not the staging one
    state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
    assert Path(state["best_model_checkpoint"]) == best


def test_the_plots_mark_where_it_stopped(stopped_run):
    from lora_studio.compare import compared_run, metrics_table
    from lora_studio.runs import read_run
    from lora_studio.ui.tab_train import RULE_WIDTH, curve_colors, loss_frame, status_html

    events = read_events(stopped_run.run_dir / "events.jsonl")
    stop = next(e for e in events if isinstance(e, EarlyStopped))
    frame = loss_frame(events, "zh")
    rule = frame[frame.curve == "早停"]
    assert rule.step.tolist() == [stop.step, stop.step + RULE_WIDTH]
    assert rule.loss.tolist() == [frame.loss.min(), frame.loss.max()]
    assert "早停" in curve_colors(True) and "early stop" in curve_colors(True) and "早停" not in curve_colors()
    assert dict(metrics_table([compared_run(read_run(stopped_run.run_dir))]))["early_stop"] == (stop.step,)
    status = status_html(stopped_run.run_dir, events, "completed", "zh")  # a run short of its steps says why
    assert f"早停于第 {stop.step} 步（最好的是第 {stop.best_step} 步）" in status


def test_patience_without_a_validation_split_is_refused_before_anything_starts(demo_model_dir, ws):
    job = TrainingJob(overfit_config(demo_model_dir, val_size=0.0), ws)
    with pytest.raises(ConfigError) as refused:
        job.start()
    assert refused.value.where == Setting.early_stopping_patience
    assert "val_size" in refused.value.render("en") and "early_stopping_patience to 0" in refused.value.render("en")
    assert "验证集比例 val_size 为 0" in refused.value.render("zh")
    assert job.state == "pending" and (not ws.runs.exists() or not any(ws.runs.iterdir()))


def test_the_dry_run_refuses_it_too_and_no_patience_changes_nothing(demo_model_dir, ws):
    from lora_studio.estimate import dry_run
    from lora_studio.recipe import training_arguments

    with pytest.raises(ConfigError, match="val_size is 0"):
        dry_run(overfit_config(demo_model_dir, val_size=0.0), ws)
    assert dry_run(overfit_config(demo_model_dir), ws).total_steps == MAX_STEPS
    plain = training_arguments(overfit_config(demo_model_dir, early_stopping_patience=0), Path("out"), False, True)
    assert not plain.load_best_model_at_end and plain.metric_for_best_model is None
    watched = training_arguments(overfit_config(demo_model_dir), Path("out"), False, True)
    assert watched.load_best_model_at_end and watched.metric_for_best_model == "eval_loss"
    assert watched.greater_is_better is False and watched.eval_steps == watched.save_steps
