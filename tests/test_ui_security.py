"""Issue 10 items 3 and 4 through the studio's API, as a hostile but fair client would try them.

3. Every endpoint that takes a path (datasets, the model, a chat adapter, a run, a preset) refuses
   what lies outside the studio's roots and never shows a non-dataset's keys.
4. Uploads: a size limit, nothing kept that fails its check, Gradio's temporary copies removed.
Item 5 (exposure) is test_ui_exposure.py.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from .studio_fixture import close_studio, launch_studio  # noqa: E402
from .test_roots import ALPACA, DATASET_CASES, OUTSIDE, SECRETS, build_host, make_run, write_json  # noqa: E402
from .test_ui_api import settings  # noqa: E402

REFUSED = [case for case in DATASET_CASES if case[2] in ("outside", "folder", "not_dataset")]
GRADIO_WORDS = ("Traceback", "Could not preprocess", "not in the list of choices", "Value:")


@pytest.fixture(scope="module")
def hosted(tmp_path_factory, demo_model_dir):
    """One studio over a workspace with secrets outside it and links out, for many refusals."""
    from lora_studio.workspace import Workspace

    root = tmp_path_factory.mktemp("hosted")
    ws = Workspace(root / "workspace")
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    host = build_host(root, ws)
    url, state, demo = launch_studio(ws, "en", allowed=(str(host["allowed"]),))
    host.update(client=Client(url, verbose=False), state=state, url=url)
    yield host
    close_studio(state, demo)


def refused(client, expect: str, **call) -> str:
    with pytest.raises(Exception) as error:
        client.predict(**call)
    text = str(error.value)
    assert expect in text, text
    assert not any(secret in text for secret in SECRETS), text
    assert not any(word in text for word in GRADIO_WORDS), text
    return text


EXPECTED = {"outside": OUTSIDE, "folder": "this is a folder, not a file", "not_dataset": "this file is not a dataset"}
DATA_ENDPOINTS = {"/load_dataset": {}, "/dataset_page": {"page": 1}, "/inspect_record": {"record": 1},
                  "/preflight": {}, "/start_training": {}}


@pytest.mark.parametrize("endpoint", list(DATA_ENDPOINTS))
def test_every_dataset_endpoint_reads_only_inside_the_roots(hosted, endpoint, monkeypatch):
    monkeypatch.setenv("HOME", str(hosted["outside"]))
    client = hosted["client"]
    for case, make, kind in REFUSED:
        path = make(hosted)
        text = refused(client, EXPECTED[kind], api_name=endpoint, **DATA_ENDPOINTS[endpoint],
                       **settings(data_files=[path]))
        assert "【Dataset problem】" in text, (case, text)
        if kind == "outside":
            assert str(hosted["allowed"]) in text and "--allow-path DIR" in text, (case, text)
    assert hosted["state"].training.job is None  # nothing was started by any of them
    # what is inside stays readable: the workspace, the bundled data, the allowed folder
    for path in (str(hosted["ws"].data / "qa.json"), "data/huanhuan_sample.json", str(hosted["allowed"] / "ok.json")):
        table, *_ = client.predict(page=1, **settings(data_files=[path]), api_name="/dataset_page")
        assert table["data"], path


def test_model_adapter_run_and_preset_names_stay_inside_the_roots(hosted, monkeypatch):
    monkeypatch.setenv("HOME", str(hosted["outside"]))
    client, ws, outside = hosted["client"], hosted["ws"], hosted["outside"]
    make_run(outside / "run-out")
    models = [str(outside / "model"), "/etc", "~/model", "evil", str(ws.models / ".." / ".." / "outside" / "model")]
    tried = 0
    for name in models:
        for endpoint in ("/preflight", "/load_dataset", "/start_training"):
            refused(client, OUTSIDE, api_name=endpoint, **settings(model_name_or_path=name))
            tried += 1
        refused(client, OUTSIDE, message="你好", adapter="", model=name, system="", base_history=[],
                tuned_history=[], api_name="/chat_compare")
        facts = client.predict(model_name_or_path=name, api_name="/model_facts")
        assert OUTSIDE in facts and "hunter2" not in facts and "llama" not in facts, facts
        tried += 2
    for adapter in (str(outside / "run-out"), str(outside / "run-out" / "adapter"), "/etc", "~/run-out",
                    str(ws.runs / "escaped" / "run-out")):
        refused(client, OUTSIDE, message="你好", adapter=adapter, model="", system="", base_history=[],
                tuned_history=[], api_name="/chat_compare")
        tried += 1
    for run in ("../../etc", "..", "/etc/passwd", "escaped", "run-1/../..", "nope"):
        text = refused(client, "【Job problem】", run=run, api_name="/resume_training")
        assert "there is no run called" in text or OUTSIDE in text, text
        tried += 1
    for preset in ("/etc/passwd", "../../etc/passwd", str(outside / "secret.json"), "presets/demo-tiny.yaml"):
        refused(client, "there is no preset called", preset=preset, api_name="/load_preset")
        tried += 1
    assert tried == 5 * 5 + 5 + 6 + 4
    assert hosted["state"].training.job is None


# --- 4. uploads --------------------------------------------------------------------------------
@pytest.fixture
def uploads(ws, demo_model_dir, tmp_path, monkeypatch):
    """A studio with a 2 KB upload limit; Gradio's upload folder is the test's own, to see it emptied."""
    gradio_dir = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_dir))
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    url, state, demo = launch_studio(ws, "en", max_upload_bytes=2048)
    yield Client(url, verbose=False), ws, gradio_dir, tmp_path / "mine"
    close_studio(state, demo)


def leftovers(gradio_dir) -> list[str]:
    """Files still in Gradio's upload folder (Gradio's own bookkeeping folder aside)."""
    time.sleep(0.3)  # Gradio moves an upload into its cache in a background task
    return sorted(str(p.relative_to(gradio_dir)) for p in gradio_dir.rglob("*")
                  if p.is_file() and "vibe_edit_history" not in p.parts)


UPLOADS = [  # (case, files: name -> content, expected: kept | error text)
    ("alpaca-json", {"qa.json": json.dumps(ALPACA)}, "kept"),
    ("chat-jsonl", {"chat.jsonl": json.dumps({"messages": [{"role": "user", "content": "x"},
                                                          {"role": "assistant", "content": "y"}]})}, "kept"),
    ("chinese-name", {"甄嬛.json": json.dumps(ALPACA, ensure_ascii=False)}, "kept"),
    ("two-files", {"a.json": json.dumps(ALPACA), "b.jsonl": json.dumps(ALPACA[0])}, "kept"),
    ("secret-keys", {"secrets.json": json.dumps({"api_key": "s3cr3t-value"})}, "this file is not a dataset"),
    ("secret-first-record", {"s.json": json.dumps([{"password": "hunter2"}])}, "this file is not a dataset"),
    ("broken-json", {"broken.json": '[{"instruction": "q", "output": "a"},'}, "broken.json"),
    ("bad-record", {"bad.json": json.dumps([*ALPACA, {"instruction": "q"}])}, "bad.json, record 2"),
    ("empty", {"empty.json": ""}, "the file is empty"),
    ("not-utf8", {"gbk.json": "GBK"}, "not valid UTF-8"),
    ("text-file", {"notes.txt": "hello"}, "unsupported file type '.txt'"),
    ("yaml-file", {"config.yaml": "a: 1"}, "unsupported file type '.yaml'"),
    ("one-bad-of-two", {"good.json": json.dumps(ALPACA), "bad.json": "{"}, "bad.json"),
    ("too-big", {"big.json": json.dumps(ALPACA * 200)}, "upload"),
]


@pytest.mark.parametrize("case,files,expected", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_uploads_are_checked_before_they_are_kept(uploads, case, files, expected):
    client, ws, gradio_dir, mine = uploads
    mine.mkdir()
    sent = []
    for name, content in files.items():
        path = mine / name
        path.write_bytes(content.encode("gbk") + "甄嬛".encode("gbk") if content == "GBK" else content.encode())
        sent.append(handle_file(str(path)))
    if expected == "kept":
        value, picker = client.predict(files=sent, api_name="/upload_dataset")
        kept = value.splitlines()
        assert [k.rsplit("/", 1)[-1] for k in kept] == [n.lower() for n in files], kept
        assert all(k.startswith(str(ws.data)) for k in kept) and picker is None
        assert sorted(p.name for p in ws.data.iterdir()) == sorted(n.lower() for n in files)
        again, _ = client.predict(files=sent, api_name="/upload_dataset")
        assert again == value  # the same bytes: the same copy
    else:
        with pytest.raises(Exception) as error:
            client.predict(files=sent, api_name="/upload_dataset")
        text = str(error.value)
        assert expected in text or case == "too-big", text
        assert str(gradio_dir) not in text and "Traceback" not in text  # named by the file's own name
        assert not any(secret in text for secret in SECRETS)
        assert not ws.data.exists() or not any(ws.data.iterdir()), list(ws.data.iterdir())  # nothing kept
    assert leftovers(gradio_dir) == []  # Gradio's copies are gone, kept or not


def test_the_upload_handler_checks_what_gradio_hands_it(tmp_path):
    """The handler's own checks, for what Gradio's limit would stop first or a client could forge."""
    from lora_studio.errors import DataError
    from lora_studio.ui.uploads import Upload, keep_uploads

    gradio_dir, data = tmp_path / "gradio", tmp_path / "workspace" / "data"
    staged = write_json(gradio_dir / "abc123" / "qa.json", ALPACA)
    outside = write_json(tmp_path / "elsewhere" / "victim.json", ALPACA)
    forged = [{"path": str(outside), "orig_name": "victim.json"}]
    with pytest.raises(DataError, match="the uploaded file is gone"):
        keep_uploads(forged, data, gradio_dir, 1 << 20)
    assert outside.exists() and not data.exists()  # neither read nor deleted
    with pytest.raises(DataError, match="over the upload limit of"):
        keep_uploads([{"path": str(staged), "orig_name": "qa.json"}], data, gradio_dir, 10)
    assert not staged.exists() and not (gradio_dir / "abc123").exists() and gradio_dir.exists()
    staged = write_json(gradio_dir / "def456" / "qa.json", ALPACA)
    kept = keep_uploads([{"path": str(staged), "orig_name": "../../../etc/cron.d/evil name.json"}], data, gradio_dir,
                        1 << 20)
    assert kept == [data / "evil-name.json"] and not staged.exists()
    assert Upload.from_payload(str(staged)).name == "qa.json"
