"""Runs under a launcher: the torchrun/accelerate commands, bad launcher settings, and two CPU ranks (gloo)
started, stopped and resumed through the studio's API.

The end-to-end test launches the real studio over its own workspace and drives it with gradio_client,
as a script would: /start_training with launcher torchrun and 2 processes, /training_progress while it
runs, /stop_training (the cooperative stop file), /resume_training to the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_studio import launch
from lora_studio.config import RunConfig
from lora_studio.errors import ConfigError
from lora_studio.events import Finished, Log, Progress, read_events
from lora_studio.i18n import msg
from lora_studio.launch_job import EventTail, process_started, terminate_tree
from lora_studio.runs import read_run

PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"
RANK_LINE = re.compile(r"\[rank (\d)\] (\d+) optimizer steps, LoRA weight checksum ([\d.]+)")
STEPS = 120  # enough that a stop lands mid-run (a step takes ~0.1 s here), few enough to resume quickly


def english(error) -> str:
    return error.value.render("en")


# --- the commands --------------------------------------------------------------------------------
def test_in_process_unless_a_launcher_applies():
    assert launch.plan(RunConfig(launcher="none"), 8) is None
    assert launch.plan(RunConfig(), 1) is None and launch.plan(RunConfig(), 0) is None  # auto, one GPU or none
    auto = launch.plan(RunConfig(), 4)
    assert (auto.launcher, auto.processes) == ("torchrun", 4)  # auto with several GPUs: all of them
    cpu = launch.plan(RunConfig(launcher="torchrun", num_processes=2), 0)  # chosen on a CPU machine: gloo ranks
    assert cpu.processes == 2


def test_torchrun_command_runs_this_python_on_studio_py():
    found = launch.plan(RunConfig(launcher="torchrun", num_processes=2), 2)
    argv = found.command(launch.train_args(Path("/w/runs/r")))
    assert argv == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                    str(launch.SCRIPT), "train", "/w/runs/r/config.yaml", "--run-dir", "/w/runs/r"]
    resume = found.command(launch.train_args(Path("/w/runs/r"), resume=True, trust_remote_code=True,
                                             overrides={"max_steps": 9}))
    assert resume[-6:] == ["train", "--resume", "/w/runs/r", "--set", "max_steps=9", "--trust-remote-code"]


def test_accelerate_command_with_a_config_file(tmp_path):
    deepspeed = tmp_path / "zero3.yaml"
    deepspeed.write_text("distributed_type: DEEPSPEED\nnum_processes: 8\ndeepspeed_config:\n  zero_stage: 3\n")
    found = launch.plan(RunConfig(launcher="accelerate", accelerate_config=str(deepspeed)), 8)
    assert found.processes == 8
    argv = found.command(["train", "x.yaml"])
    assert argv[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(deepspeed)]
    assert "--num_processes" not in argv and argv[-3:] == [str(launch.SCRIPT), "train", "x.yaml"]  # the file's 8
    chosen = launch.plan(RunConfig(launcher="accelerate", accelerate_config=str(deepspeed), num_processes=2), 8)
    assert chosen.command([])[5:7] == ["--num_processes", "2"]
    plain = launch.plan(RunConfig(launcher="auto", num_processes=2), 2).command([])
    assert plain[1:3] == ["-m", "torch.distributed.run"]
    ddp = launch.plan(RunConfig(launcher="accelerate", num_processes=2), 2).command([])
    assert ddp[3:] == ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_machines", "1",
                       "--num_processes", "2", str(launch.SCRIPT)]


def test_multi_node_commands_name_each_node_and_the_endpoint():
    config = RunConfig(nnodes=2, rdzv_endpoint="10.0.0.1:29500", num_processes=4)
    found = launch.plan(config, 4)
    lines = found.shell_lines(launch.train_args(Path("/w/runs/r")), {"LORA_STUDIO_HOME": "/w"})
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert line.startswith("LORA_STUDIO_HOME=/w ") and f"--node_rank {rank} " in line
        assert "--nnodes 2 " in line and "--rdzv_backend c10d --rdzv_endpoint 10.0.0.1:29500" in line
        assert "--standalone" not in line and "--nproc_per_node 4" in line
    accelerate = launch.plan(config.replace(launcher="accelerate"), 4).command([], node_rank=1)
    assert accelerate[accelerate.index("--num_processes") + 1] == "8"  # accelerate counts every node's
    assert accelerate[accelerate.index("--machine_rank") + 1] == "1"
    assert accelerate[accelerate.index("--main_process_ip") + 1:accelerate.index("--main_process_ip") + 4] == \
        ["10.0.0.1", "--main_process_port", "29500"]


def test_dry_run_shows_the_launch_command(demo_model_dir, tmp_path, capsys):
    from lora_studio.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {demo_model_dir}\ndata_files: [{PALACE_QA}]\nrun_name: nodes\n"
                      "nnodes: 2\nrdzv_endpoint: node0:29400\nlauncher: torchrun\nnum_processes: 2\n")
    assert main(["train", str(config), "--dry-run", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "Launch command (torchrun, 2 processes per node):" in out
    assert "Node 0:" in out and "Node 1:" in out and "--node_rank 1" in out and "node0:29400" in out
    assert f"--run-dir {Path(os.environ['LORA_STUDIO_HOME']).resolve() / 'runs' / 'nodes'}" in out


# --- bad launcher settings: one message each, before anything starts ------------------------------
@pytest.mark.parametrize("content, words, fix", [
    ("distributed_type: [unclosed", "is not valid YAML", "Write one with accelerate config"),
    ("- just\n- a list\n", "should be a mapping", "Write one with accelerate config"),
    ("distributed_type: MULTI_TPUX\n", "does not know the distributed_type 'MULTI_TPUX'", "Known values: NO, MULTI_CPU"),
])
def test_an_accelerate_config_that_does_not_parse(tmp_path, content, words, fix):
    bad = tmp_path / "accelerate.yaml"
    bad.write_text(content)
    with pytest.raises(ConfigError) as error:
        launch.plan(RunConfig(launcher="accelerate", accelerate_config=str(bad)), 2)
    assert words in english(error) and str(bad) in english(error)
    assert fix in english(error)  # what to do about it
    with pytest.raises(ConfigError, match="was not found"):
        launch.plan(RunConfig(launcher="accelerate", accelerate_config=str(tmp_path / "none.yaml")), 2)


def test_bad_launcher_settings_are_named():
    with pytest.raises(ConfigError) as error:
        launch.plan(RunConfig(launcher="torchrun", num_processes=4), 2)
    assert "4 processes were asked for, but this machine sees only 2 GPUs" in english(error)
    assert error.value.where == "num_processes"
    with pytest.raises(ConfigError) as error:
        launch.plan(RunConfig(nnodes=2), 2)
    assert "a run on 2 nodes needs a rendezvous endpoint" in english(error) and "host:port" in english(error)
    with pytest.raises(ConfigError, match="is not of the form host:port"):
        launch.plan(RunConfig(nnodes=2, rdzv_endpoint="node0"), 2)


def test_a_launcher_that_is_not_installed(monkeypatch):
    monkeypatch.setattr(launch, "installed", lambda module: False)
    with pytest.raises(ConfigError) as error:
        launch.plan(RunConfig(launcher="accelerate"), 2)
    assert "the launcher accelerate is not installed (the accelerate package is missing)" in english(error)
    assert "pip install accelerate" in english(error)
    assert launch.plan(RunConfig(launcher="none"), 2) is None  # in-process training needs no launcher
    monkeypatch.undo()
    assert launch.installed("torch.distributed.run") and not launch.installed("no_such_launcher.run")


# --- the parts of the launched job ----------------------------------------------------------------
def test_event_tail_hands_over_whole_lines_once(tmp_path):
    from lora_studio.files import write_text_atomic

    path = tmp_path / "events.jsonl"
    lines = [json.dumps(Progress(step=n, total_steps=9, epoch=0.0).to_json()) for n in (1, 2, 3)]
    tail = EventTail(path)
    assert tail.read() == []  # no file yet
    path.write_text(lines[0] + "\n" + lines[1][:20])  # the second line is still being written
    assert [e.step for e in tail.read()] == [1]
    with path.open("a") as out:
        out.write(lines[1][20:] + "\n")
    assert [e.step for e in tail.read()] == [2]
    write_text_atomic(path, lines[0] + "\n" + lines[2] + "\n")  # a resume rewrites the file
    assert [e.step for e in tail.read()] == [3]
    assert tail.read() == []


TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the worker below ignores SIGTERM: only SIGKILL ends it
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(120)
"""


def test_terminate_tree_ends_workers_in_sessions_of_their_own(tmp_path):
    """torchrun starts each worker in a session of its own: ending the launcher's group would leave them."""
    import psutil

    pid_file = tmp_path / "worker.pid"
    leader = subprocess.Popen([sys.executable, "-c", TREE, str(pid_file)], start_new_session=True)
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    worker = psutil.Process(int(pid_file.read_text()))
    began = time.time()
    terminate_tree(leader.pid, grace=1.0)
    assert leader.wait(10) is not None
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert time.time() - began < 15


def test_a_run_whose_launcher_still_runs_is_listed_as_running(tmp_path):
    run = tmp_path / "runs" / "orphan"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text(json.dumps(Log(text=msg("launch.stop_asked", seconds=1)).to_json())
                                      + "\n")
    assert read_run(run).status == "interrupted"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "launcher.pid").write_text(json.dumps({"pid": sleeper.pid, "started": process_started(sleeper.pid)}))
        assert read_run(run).status == "running"  # what a restarted studio shows
    finally:
        sleeper.kill()
        sleeper.wait()
    assert read_run(run).status == "interrupted"
    (run / "launcher.pid").write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))  # a reused number
    assert read_run(run).status == "interrupted"


# --- through the studio's API ----------------------------------------------------------------------
@pytest.fixture
def studio(ws, demo_model_dir, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client

    from .studio_fixture import close_studio, launch_studio

    monkeypatch.setenv("LANG", "en_US.UTF-8")  # the ranks' lines in launcher.log
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    ws.data.mkdir(parents=True, exist_ok=True)
    shutil.copy(PALACE_QA, ws.data / "palace_qa.json")
    url, state, demo = launch_studio(ws, "en")
    yield Client(url, verbose=False), state
    close_studio(state, demo)


def settings(ws, **changes) -> dict:
    from lora_studio.ui.form import widget_values

    base = dict(model_name_or_path="demo-tiny", data_files=[str(ws.data / "palace_qa.json")], cutoff_len=64,
                lora_dropout=0.0, learning_rate=3e-3, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                lr_scheduler_type="constant", logging_steps=1, save_steps=1000, max_steps=STEPS, run_name="ddp",
                launcher="torchrun", num_processes=2)
    return widget_values(RunConfig(**{**base, **changes}))


def wait_for(client, done, timeout=240.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = client.predict(api_name="/training_progress")
        if done(progress):
            return progress
        time.sleep(0.3)
    raise AssertionError(f"timed out; last progress {progress}")


def rank_lines(log: Path) -> list[dict]:
    """Each session's '[rank N] S optimizer steps, LoRA weight checksum C' lines, as {rank: (S, C)}."""
    sessions = [{}]
    for rank, steps, checksum in RANK_LINE.findall(log.read_text(encoding="utf-8")):
        if rank in sessions[-1]:
            sessions.append({})
        sessions[-1][rank] = (int(steps), checksum)
    return sessions


def test_two_ranks_from_the_studio_stop_and_resume(studio, ws):
    from lora_studio.launch_job import LaunchedTrainingJob

    client, state = studio
    state.chat.load_base(RunConfig(model_name_or_path="demo-tiny"))
    assert "ddp" in client.predict(**settings(ws), api_name="/start_training")
    assert isinstance(state.training.job, LaunchedTrainingJob)
    assert state.chat.model is None  # the chat model was released for the run's processes
    running = wait_for(client, lambda p: p["step"] >= 1)  # the child's events stream in while it runs
    assert running["state"] == "running" and running["total_steps"] == STEPS
    client.predict(api_name="/stop_training")
    stopped = wait_for(client, lambda p: p["state"] not in ("running", "stopping"))
    run = ws.runs / "ddp"
    assert stopped["state"] == "stopped", (run / "launcher.log").read_text()[-3000:]
    step = stopped["step"]
    assert 0 < step < STEPS
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / f"checkpoint-{step}").is_dir()
    assert not (run / "STOP").exists() and not (run / "launcher.pid").exists()
    first = rank_lines(run / "launcher.log")
    assert len(first) == 1 and first[0]["0"] == first[0]["1"] and first[0]["0"][0] == step  # same steps, weights
    assert [p.name for p in ws.runs.iterdir()] == ["ddp"]

    assert "Resumed" in client.predict(run="ddp", api_name="/resume_training")
    done = wait_for(client, lambda p: p["state"] not in ("running", "stopping"))
    assert (done["state"], done["step"]) == ("completed", STEPS), (run / "launcher.log").read_text()[-3000:]
    sessions = rank_lines(run / "launcher.log")
    assert len(sessions) == 2 and sessions[1]["0"] == sessions[1]["1"] and sessions[1]["0"][0] == STEPS
    events = read_events(run / "events.jsonl")
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(1, STEPS + 1))  # each step once
    assert [e.status for e in events if isinstance(e, Finished)] == ["stopped", "completed"]
    assert read_run(run).status == "completed"


def test_the_studio_refuses_bad_launcher_settings_before_starting(studio, ws, monkeypatch):
    client, state = studio
    bad = ws.data / "accelerate.yaml"
    bad.write_text("distributed_type: [unclosed")
    cases = [(dict(launcher="accelerate", accelerate_config=str(bad)), "is not valid YAML"),
             (dict(nnodes=3), "a run on 3 nodes needs a rendezvous endpoint")]
    for changes, words in cases:
        with pytest.raises(Exception) as error:
            client.predict(**settings(ws, **changes), api_name="/start_training")
        assert words in str(error.value) and "Traceback" not in str(error.value)
    monkeypatch.setattr(launch, "visible_devices", lambda: 2)
    with pytest.raises(Exception, match="3 processes were asked for, but this machine sees only 2 GPUs"):
        client.predict(**settings(ws, num_processes=3), api_name="/start_training")
    monkeypatch.setattr(launch, "installed", lambda module: False)
    with pytest.raises(Exception, match="the launcher torchrun is not installed"):
        client.predict(**settings(ws), api_name="/start_training")
    assert state.training.job is None and (not ws.runs.exists() or not any(ws.runs.iterdir()))


def test_a_multi_node_run_shows_each_node_command_and_starts_nothing(studio, ws):
    client, state = studio
    notice = client.predict(**settings(ws, nnodes=2, rdzv_endpoint="node0:29500"), api_name="/start_training")
    assert "This run spans 2 nodes and has not started" in notice
    assert "--node_rank 0" in notice and "--node_rank 1" in notice and "--rdzv_endpoint node0:29500" in notice
    assert state.training.job is None  # nothing trains until a node is started
    run = ws.runs / "ddp"
    assert (run / "config.yaml").is_file() and "NODE_RANK" in (run / "launch.sh").read_text()
    from lora_studio.launch import prepared_run

    assert prepared_run(ws) == run  # what 'Start node 0 here' would start


def test_node_0_starts_from_the_studio_and_a_stop_it_cannot_honour_ends_its_processes(studio, ws, monkeypatch):
    """Node 0 of a prepared 2-node run waits at the rendezvous for a node that never comes: no step ends,
    so the stop file is never read, and after the stop timeout the processes are ended."""
    from lora_studio.events import Failed
    from lora_studio.launch_job import LaunchedTrainingJob

    from .studio_fixture import free_port

    client, state = studio
    with pytest.raises(Exception, match="there is no prepared multi-node run"):
        client.predict(api_name="/start_training_node")
    monkeypatch.setattr(LaunchedTrainingJob, "stop_timeout", 1.0)
    endpoint = f"127.0.0.1:{free_port()}"
    client.predict(**settings(ws, nnodes=2, num_processes=1, rdzv_endpoint=endpoint), api_name="/start_training")
    assert "Node 0 started here" in client.predict(api_name="/start_training_node")
    job = state.training.job
    assert job.command[job.command.index("--node_rank") + 1] == "0" and endpoint in job.command
    assert json.loads((job.run_dir / "launcher.pid").read_text())["pid"] == job.process.pid
    client.predict(api_name="/stop_training")
    assert job.join(90), "the launcher was not ended"
    assert job.process.poll() is not None and job.state == "failed"
    assert "was ended by force (after 1 s)" in job.events.last(Failed).message
    assert [e.message for e in read_events(job.run_dir / "events.jsonl") if isinstance(e, Failed)] == \
        [job.events.last(Failed).message]  # said once, and kept for a reloaded page
    assert read_run(job.run_dir).status == "failed"
