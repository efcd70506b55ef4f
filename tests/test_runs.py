"""Run folders as the studio lists them: statuses, the runs index's caching, and the pace of past runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lora_studio import runs
from lora_studio.config import RunConfig, Setting, fields_with, save_yaml
from lora_studio.events import EventLog, Failed, Finished, Log, Progress
from lora_studio.i18n import msg
from lora_studio.runs import RunsIndex, list_runs, measured_pace, read_run
from lora_studio.workspace import Workspace


def make_run(ws, name: str, *events, config: RunConfig | None = None, started: float = 1000.0) -> Path:
    """A run folder with its config.yaml and events.jsonl, as a training job leaves it."""
    folder = ws.runs / name
    folder.mkdir(parents=True)
    save_yaml(config or RunConfig(model_name_or_path="demo-tiny", run_name=name), folder / "config.yaml")
    log = EventLog(folder / "events.jsonl")
    log.emit(Log(msg("training.loading_model", model="demo-tiny"), time=started))
    for event in events:
        log.emit(event)
    return folder


def steps(count: int, seconds_per_step: float = 0.5, total: int = 100) -> list[Progress]:
    return [Progress(step=n, total_steps=total, epoch=0.1 * n, loss=2.0 / n, elapsed=n * seconds_per_step)
            for n in range(1, count + 1)]


@pytest.fixture
def counted_reads(monkeypatch):
    """How often each events.jsonl is parsed, and how often the runs folder is listed."""
    counts = {"events": [], "listings": 0}
    read_events, iterdir = runs.read_events, Path.iterdir

    def counting_read(path):
        counts["events"].append(Path(path).parent.name)
        return read_events(path)

    def counting_iterdir(self):
        if self.name == "runs":
            counts["listings"] += 1
        return iterdir(self)

    monkeypatch.setattr(runs, "read_events", counting_read)
    monkeypatch.setattr(Path, "iterdir", counting_iterdir)
    return counts


def test_each_run_says_how_it_ended(ws):
    make_run(ws, "done", *steps(3), Finished(status="completed", step=3, loss=0.7), started=1003)
    make_run(ws, "halted", *steps(2), Finished(status="stopped", step=2), started=1002)
    make_run(ws, "broken", *steps(1), Failed(text=msg("training.out_of_memory"), step=1), started=1001)
    make_run(ws, "died", *steps(2), started=1000)
    listed = {run.name: run for run in list_runs(ws)}
    assert [run.name for run in list_runs(ws)] == ["done", "halted", "broken", "died"]  # newest first
    assert {name: run.status for name, run in listed.items()} == {
        "done": "completed", "halted": "stopped", "broken": "failed", "died": "interrupted"}
    assert listed["broken"].message.render("en") == "out of memory during training"
    assert listed["done"].model == "demo-tiny" and listed["done"].step == 3
    assert listed["done"].loss == pytest.approx(2.0 / 3)
    assert list_runs(ws, active=ws.runs / "died")[-1].status == "running"


def test_a_run_folder_without_events_or_config_is_listed_not_fatal(ws):
    (ws.runs / "empty").mkdir(parents=True)
    info = read_run(ws.runs / "empty")
    assert (info.status, info.step, info.model, info.config) == ("interrupted", 0, "", None)
    (ws.runs / "empty" / "config.yaml").write_text("r: [not, a, number]\n", encoding="utf-8")
    assert read_run(ws.runs / "empty").model == "?"
    assert list_runs(Workspace(ws.root / "no-runs-yet")) == []


def test_the_index_lists_the_folder_once_a_scan_and_reads_only_what_changed(ws, counted_reads):
    quiet = make_run(ws, "quiet", *steps(3), Finished(status="completed", step=3))
    live = make_run(ws, "live", *steps(2, total=10), started=2000)
    index = RunsIndex(ws)
    first = index.scan(active=live)
    assert counted_reads["listings"] == 1 and sorted(counted_reads["events"]) == ["live", "quiet"]
    assert [(r.name, r.status, r.step) for r in first] == [("live", "running", 2), ("quiet", "completed", 3)]

    counted_reads["events"].clear()
    assert [(r.name, r.step) for r in index.scan(active=live)] == [("live", 2), ("quiet", 3)]
    assert counted_reads["listings"] == 2 and counted_reads["events"] == []  # nothing changed: nothing read

    EventLog(live / "events.jsonl").emit(Progress(step=3, total_steps=10, epoch=0.3, loss=0.5, elapsed=1.5))
    os.utime(quiet / "events.jsonl")  # touched, same size: mtime alone counts as a change
    again = index.scan(active=live)
    assert sorted(counted_reads["events"]) == ["live", "quiet"] and counted_reads["listings"] == 3
    assert [(r.name, r.step, r.loss) for r in again][0] == ("live", 3, 0.5)

    counted_reads["events"].clear()
    EventLog(live / "events.jsonl").emit(Finished(status="completed", step=3))
    assert index.scan()[0].status == "completed" and counted_reads["events"] == ["live"]


def test_a_deleted_run_leaves_the_index(ws):
    import shutil

    gone = make_run(ws, "gone", *steps(1))
    index = RunsIndex(ws)
    assert [r.name for r in index.scan()] == ["gone"]
    shutil.rmtree(gone)
    assert index.scan() == []


def test_a_changed_config_is_read_again(ws, counted_reads):
    folder = make_run(ws, "run", *steps(3))
    index = RunsIndex(ws)
    assert index.scan()[0].model == "demo-tiny"
    save_yaml(RunConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct"), folder / "config.yaml")
    assert index.scan()[0].model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert counted_reads["events"] == ["run"]  # the events did not change


def test_pace_comes_from_the_newest_run_with_the_same_pace_settings(ws):
    base = RunConfig(model_name_or_path="demo-tiny")
    make_run(ws, "older", *steps(10, seconds_per_step=2.0), config=base, started=1000)
    make_run(ws, "newer", *steps(10, seconds_per_step=0.5), config=base.replace(learning_rate=0.5), started=2000)
    make_run(ws, "short", *steps(2, seconds_per_step=0.1), config=base, started=3000)  # too few steps to time
    listed = list_runs(ws)
    assert measured_pace(base, listed) == (pytest.approx(0.5), "newer")  # learning_rate does not set the pace
    slower = base.replace(per_device_train_batch_size=8)
    assert Setting.per_device_train_batch_size in fields_with("pace")
    assert measured_pace(slower, listed) is None
    assert measured_pace(base, [r for r in listed if r.name != "newer"]) == (pytest.approx(2.0), "older")


def test_pace_counts_only_the_latest_session_of_a_resumed_run(ws):
    first = steps(6, seconds_per_step=5.0)  # a slow machine, then resumed on a faster one at step 7
    resumed = [Progress(step=n, total_steps=100, epoch=0.0, loss=1.0, elapsed=(n - 6) * 1.0) for n in range(7, 12)]
    make_run(ws, "resumed", *first, *resumed)
    assert list_runs(ws)[0].pace == pytest.approx(1.0)
