"""Experiment trackers: TensorBoard offline writes its event files into the run folder with the run's own
losses, a tracker that is not installed is refused by name before anything starts, and the run says
where the tracker shows it (a TrackerLink event, and a log line the CLI prints).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio import trackers
from lora_studio.config import RunConfig
from lora_studio.errors import ConfigError
from lora_studio.events import Finished, Log, Progress, TrackerLink, read_events
from lora_studio.workspace import Workspace
from tiny_model_fixture import PALACE_QA, build_tiny_model

pytest.importorskip("tensorboard")


def run_config(model_dir: Path, name: str, **changes) -> RunConfig:
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=64,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=4, save_steps=4,
                  logging_steps=1, run_name=name, report_to="tensorboard")
    return RunConfig(**{**values, **changes})


@pytest.fixture(scope="session")
def tensorboard_run(tmp_path_factory) -> Path:
    from lora_studio.training import TrainingJob

    model = build_tiny_model(tmp_path_factory.mktemp("tracker-model") / "tiny")
    workspace = Workspace(tmp_path_factory.mktemp("tracker-ws"))
    job = TrainingJob(run_config(model, "tb-run"), workspace).start()
    assert job.join(240), "the run did not finish"
    assert isinstance(job.events.last(Finished), Finished), job.events.all()[-3:]
    return job.run_dir


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_writes_the_runs_losses_into_the_run_folder(tensorboard_run):
    folder = tensorboard_run / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*")), sorted(p.name for p in tensorboard_run.iterdir())
    assert not (tensorboard_run / "checkpoints" / "runs").exists()  # not transformers' default place
    losses = [(e.step, e.loss) for e in read_events(tensorboard_run / "events.jsonl")
              if isinstance(e, Progress) and e.loss is not None]
    written = scalars(folder, "train/loss")
    assert [step for step, _ in written] == [step for step, _ in losses] == [1, 2, 3, 4]
    assert [value for _, value in written] == pytest.approx([loss for _, loss in losses], rel=1e-6)


def test_the_run_links_to_its_tensorboard(tensorboard_run):
    events = read_events(tensorboard_run / "events.jsonl")
    links = [e for e in events if isinstance(e, TrackerLink)]
    assert len(links) == 1
    link = links[0]
    folder = tensorboard_run / "tensorboard"
    assert (link.tracker, link.url) == ("tensorboard", str(folder))
    assert link.text.render("en") == f"TensorBoard logs are in {folder}; view them with: tensorboard --logdir {folder}"
    assert link.text.render("zh").startswith("TensorBoard 日志写在")
    # the same line is in the log, which the CLI prints
    assert any(isinstance(e, Log) and e.text == link.text for e in events)


def test_the_train_tab_shows_the_link(tensorboard_run):
    pytest.importorskip("gradio")
    from lora_studio.ui.tab_train import status_html

    events = read_events(tensorboard_run / "events.jsonl")
    shown = status_html(tensorboard_run, events, "completed", "en")
    assert "id='train-tracker-link'" in shown and "tensorboard --logdir" in shown
    web = TrackerLink(tracker="wandb", url="https://wandb.ai/me/lora-studio/runs/abc",
                      text=trackers.find_link("tensorboard", tensorboard_run).text)
    assert "href='https://wandb.ai/me/lora-studio/runs/abc'" in status_html(tensorboard_run, [web], "completed", "en")
    script = TrackerLink(tracker="wandb", url="javascript:alert(1)", text=web.text)
    assert "href" not in status_html(tensorboard_run, [script], "completed", "en")


def test_a_missing_tracker_is_refused_by_name_before_a_run_folder_exists(monkeypatch, ws, tmp_path):
    import importlib.util

    from lora_studio.estimate import dry_run
    from lora_studio.training import TrainingJob

    real = importlib.util.find_spec
    monkeypatch.setattr(trackers, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = run_config(tmp_path / "never-loaded", "refused", report_to="wandb")
    with pytest.raises(ConfigError) as refused:
        TrainingJob(config, ws).start()
    message = refused.value.message
    assert message.startswith("report_to: the experiment tracker wandb needs the wandb package, which is not installed")
    assert "-m pip install wandb in the studio's environment" in message
    assert not ws.runs.exists() or not any(ws.runs.iterdir())
    with pytest.raises(ConfigError, match="needs the wandb package"):
        dry_run(config, ws)
    assert "wandb 包" in refused.value.render("zh")


def test_each_tracker_names_the_package_it_needs(monkeypatch):
    monkeypatch.setattr(trackers, "find_spec", lambda name, *a: None)
    for tracker in ("tensorboard", "swanlab", "wandb", "mlflow", "trackio"):
        with pytest.raises(ConfigError, match=f"needs the {tracker} package"):
            trackers.check_installed(RunConfig(report_to=tracker))
    trackers.check_installed(RunConfig())  # none: nothing to install
    # tensorboardX serves TensorBoard as well
    monkeypatch.setattr(trackers, "find_spec", lambda name, *a: object() if name == "tensorboardX" else None)
    trackers.check_installed(RunConfig(report_to="tensorboard"))


def test_report_to_reaches_the_trainer_and_none_reports_nowhere(tmp_path):
    from lora_studio.recipe import training_arguments

    run = tmp_path / "my-run"
    reporting = training_arguments(RunConfig(report_to="tensorboard"), run / "checkpoints", False, False)
    assert reporting.report_to == ["tensorboard"] and reporting.run_name == "my-run"
    assert training_arguments(RunConfig(), run / "checkpoints", False, False).report_to == []


def test_a_tracker_api_that_changed_costs_the_link_not_the_run(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))  # no wandb.run at all
    link = trackers.find_link("wandb", tmp_path)
    assert link.url == "" and "wandb is recording this run, but its link could not be found" in link.text.render("en")
    fake = types.SimpleNamespace(run=types.SimpleNamespace(url="https://wandb.ai/me/p/runs/1", dir="/x"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert trackers.find_link("wandb", tmp_path).url == "https://wandb.ai/me/p/runs/1"
