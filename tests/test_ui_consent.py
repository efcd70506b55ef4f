"""Issue 10 item 2, the studio's side: a model's own code runs only when this page's checkbox says so.

The model tab's "Trust remote code" checkbox is no setting: it starts off on every page load, and
its value reaches every handler that loads a model or a tokenizer (the dataset doctor and
inspector, chat, training start and resume, the model facts). Through the API, tiny models that
ship code (tests/tiny_model_fixture.py) are tried on each of those endpoints while the run folder's
config.yaml says `trust_remote_code: true`: without the checkbox the code never runs and the
refusal says how to opt in; with it, the code may run.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from .studio_fixture import close_studio, launch_studio  # noqa: E402
# the library's consent tests' fixtures: transformers' code cache kept in the test's folders (autouse),
# and the code-free tiny model with a finished run on it
from .test_remote_code import modules_cache, tiny  # noqa: E402,F401
from .test_ui_api import wait_for  # noqa: E402
from .tiny_model_fixture import PALACE_QA, REMOTE_KINDS, add_remote_code, copy_model, interrupted_copy  # noqa: E402

OPT_IN = ("ships its own Python code", '"Trust remote code"')


@pytest.fixture(params=REMOTE_KINDS)
def shipped(request, tiny, ws, tmp_path):
    """(client, studio, model folder, resumable run saying true, data file, marker) for one kind of shipped code."""
    kind, (base_model, base_run) = request.param, tiny
    marker = tmp_path / "remote-code-ran"
    model = add_remote_code(copy_model(base_model, ws.models), kind, marker)
    ws.data.mkdir(parents=True)
    data = shutil.copy(PALACE_QA, ws.data / "palace.json")  # inside the studio's roots
    run = interrupted_copy(base_run, ws.runs / "old-run", model_name_or_path=str(model), trust_remote_code=True,
                           data_files=[str(data)], gradient_checkpointing=False)
    url, state, demo = launch_studio(ws, "en")
    yield kind, Client(url, verbose=False), state, model, run, str(data), marker
    close_studio(state, demo)


def settings_for(model, data) -> dict:
    return {"model_name_or_path": str(model), "data_files": data, "cutoff_len": 64, "max_steps": 2, "save_steps": 1,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "gradient_checkpointing": "false",
            "template": "auto", "system_prompt": ""}


def outcome(call) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the client raises what the studio's toast says
        text = str(error)
        assert all(part in text for part in OPT_IN), text
        return "refused"
    return "ok"


def job_outcome(client) -> str:
    final = wait_for(client, lambda p: p["state"] not in ("running", "stopping", "pending"), timeout=120)
    if final["state"] == "failed":
        assert all(part in final["message"] for part in OPT_IN), final["message"]
        return "refused"
    return "ok"


def test_without_the_checkbox_no_shipped_code_runs(shipped):
    kind, client, state, model, run, data, marker = shipped
    chat = dict(message="你好", system="", base_history=[], tuned_history=[], max_new_tokens=2, temperature=0,
                api_name="/chat_compare")
    tried = {
        # the doctor and the inspector load the tokenizer only: a model's code alone is not needed there
        "doctor": outcome(lambda: client.predict(**settings_for(model, data), api_name="/load_dataset")),
        "inspector": outcome(lambda: client.predict(record=1, **settings_for(model, data), api_name="/inspect_record")),
        "chat model": outcome(lambda: client.predict(adapter="", model=str(model), **chat)),
        "chat run (says true)": outcome(lambda: client.predict(adapter=str(run), model="", **chat)),
    }
    client.predict(**settings_for(model, data), api_name="/start_training")
    tried["training"] = job_outcome(client)
    client.predict(run=run.name, api_name="/resume_training")
    tried["resume (says true)"] = job_outcome(client)
    tokenizer_only = "ok" if kind == "model" else "refused"
    assert tried == {"doctor": tokenizer_only, "inspector": tokenizer_only, "chat model": "refused",
                     "chat run (says true)": "refused", "training": "refused", "resume (says true)": "refused"}, tried
    assert not marker.exists()
    facts = client.predict(model_name_or_path=str(model), api_name="/model_facts")
    assert "This model ships its own Python code" in facts and "Trust remote code" in facts


def test_with_the_checkbox_the_shipped_code_may_run(shipped):
    kind, client, _, model, run, data, marker = shipped
    table, *_ = client.predict(**settings_for(model, data), trust_remote_code=True, api_name="/load_dataset")
    assert table["data"]
    _, base, tuned = client.predict(message="你好", adapter=str(run), model="", system="", base_history=[],
                                    tuned_history=[], max_new_tokens=2, temperature=0, trust_remote_code=True,
                                    api_name="/chat_compare")
    assert base and tuned and marker.exists()
    facts = client.predict(model_name_or_path=str(model), trust_remote_code=True, api_name="/model_facts")
    assert "is ON" in facts


def test_the_checkbox_is_off_on_every_page_load(shipped):
    _, client, state, *_ = shipped
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint in ("/load_dataset", "/inspect_record", "/chat_compare", "/start_training", "/resume_training",
                     "/model_facts"):
        consent = [p for p in api[endpoint]["parameters"] if p["parameter_name"] == "trust_remote_code"]
        assert consent and consent[0]["parameter_default"] is False, endpoint
    from lora_studio.config import RunConfig

    assert "trust_remote_code" not in RunConfig().to_dict()  # no setting a file or preset could carry
