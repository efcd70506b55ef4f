"""Issue 10 item 8 in the studio: resume by a run's name from gradio_client, and a failed resume shows the run's step.

A client has no run list of its own (the page fills the dropdown per session), so the endpoint takes
any name and checks it itself. After a resume that fails, the status and /training_progress give
the step the run reached, not "step 0/0".
"""

from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from .studio_fixture import close_studio, launch_studio  # noqa: E402
from .test_ui_api import SAMPLE, settings, wait_for  # noqa: E402


@pytest.fixture
def stopped_run(ws, demo_model_dir):
    """A studio with one run stopped part-way (checkpoints every 4 steps), trained on a workspace copy of the sample."""
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    ws.data.mkdir(parents=True)
    data = shutil.copy(SAMPLE, ws.data / "qa.json")
    url, state, demo = launch_studio(ws, "en")
    client = Client(url, verbose=False)
    started = client.predict(**settings(data_files=[str(data)], max_steps=400, save_steps=4, logging_steps=1),
                             api_name="/start_training")
    run = started.split("`")[1]
    wait_for(client, lambda p: p["step"] >= 9)
    client.predict(api_name="/stop_training")
    stopped = wait_for(client, lambda p: p["state"] == "stopped")
    yield url, state, run, stopped, data
    close_studio(state, demo)


def test_resume_by_name_from_a_fresh_client(stopped_run):
    url, state, run, stopped, _ = stopped_run
    client = Client(url, verbose=False)  # a new session: its dropdown has no choices
    for name, expected in (("", "no run chosen to resume"), ("   ", "no run chosen to resume"),
                           ("nope", "there is no run called nope"), ("../runs", "there is no run called ../runs"),
                           (run + "/checkpoints", "there is no run called")):
        with pytest.raises(Exception) as error:
            client.predict(run=name, api_name="/resume_training")
        assert expected in str(error.value) and "not in the list of choices" not in str(error.value), str(error.value)
        if name.strip():
            assert run in str(error.value)  # the runs that can be resumed are listed
    assert f"Resumed: `{run}`" in client.predict(run=run, api_name="/resume_training")
    with pytest.raises(Exception, match="already in progress"):
        client.predict(run=run, api_name="/resume_training")
    progress = wait_for(client, lambda p: p["step"] > stopped["step"])
    assert progress["state"] == "running" and progress["total_steps"] == 400
    client.predict(api_name="/stop_training")
    wait_for(client, lambda p: p["state"] == "stopped")


def test_a_failed_resume_shows_the_runs_real_step(stopped_run):
    from lora_studio.runs import latest_checkpoint
    from lora_studio.ui.tab_train import current, status_html

    url, state, run, stopped, data = stopped_run
    client = Client(url, verbose=False)
    checkpoint = int(latest_checkpoint(state.workspace.runs / run).name.split("-")[1])
    assert checkpoint >= 8
    data.unlink()  # the dataset is gone: the resume fails once it starts reading
    assert "Resumed" in client.predict(run=run, api_name="/resume_training")
    failed = wait_for(client, lambda p: p["state"] == "failed")
    assert failed["step"] == checkpoint and failed["total_steps"] == 400, failed  # not 0/0
    assert "qa.json" in failed["message"]
    run_dir, events, status = current(state, state.scan_runs())
    shown = status_html(run_dir, events, status, "en")
    assert re.search(rf"Step {checkpoint}/400", shown) and "0/0" not in shown, shown


def test_a_run_whose_files_lie_outside_the_roots_is_not_resumed(stopped_run, tmp_path):
    from lora_studio.config import load_yaml, save_yaml

    url, state, run, _, data = stopped_run
    outside = tmp_path / "outside.json"
    shutil.copy(data, outside)
    config_file = state.workspace.runs / run / "config.yaml"
    save_yaml(load_yaml(config_file).replace(data_files=[str(outside)]), config_file)  # as a CLI run might have
    with pytest.raises(Exception, match="outside the folders the studio may read"):
        Client(url, verbose=False).predict(run=run, api_name="/resume_training")
    assert not state.training.job.is_active
