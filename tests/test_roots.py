"""Issue 10 item 3: the studio reads only inside its roots, and its errors never show a file that is no dataset.

Fault injection over the paths a page can name (datasets, model folders, adapters, runs, presets):
absolute paths outside, ../ traversal, symlinks inside a root pointing out, folders, files that are
no dataset but hold secret keys, /etc/passwd, ~ expansion, and a file inside --allow-path. These
call the checks the handlers call (ui/paths.py); test_ui_security.py drives the same through the API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lora_studio.errors import ConfigError, DataError, JobError, ModelError, StudioError
from lora_studio.roots import PROJECT_ROOT, Roots
from lora_studio.ui import paths

SECRETS = ("api_key", "s3cr3t-value", "password", "hunter2", "private_token")
ALPACA = [{"instruction": "你是谁？", "output": "臣妾甄嬛。"}]
OUTSIDE = "outside the folders the studio may read"


def write_json(path: Path, value, lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(v, ensure_ascii=False) for v in value) if lines else json.dumps(value)
    path.write_text(text, encoding="utf-8")
    return path


def build_host(tmp_path: Path, ws) -> dict:
    """A workspace with datasets and non-datasets, a folder outside it, links out, and an allowed folder."""
    outside, allowed = tmp_path / "outside", tmp_path / "allowed"
    write_json(outside / "secret.json", {"api_key": "s3cr3t-value", "password": "hunter2"})
    write_json(outside / "dataset.json", ALPACA)
    write_json(outside / "model" / "config.json", {"model_type": "llama", "private_token": "hunter2"})
    write_json(allowed / "ok.json", ALPACA)
    write_json(allowed / "tokens.json", {"private_token": "hunter2"})
    write_json(ws.data / "qa.json", ALPACA)
    write_json(ws.data / "qa.jsonl", ALPACA, lines=True)
    write_json(ws.data / "nested" / "hidden-name-1.json", ALPACA)
    write_json(ws.models / "tiny" / "config.json", {"model_type": "llama", "api_key": "s3cr3t-value"})
    write_json(ws.models / "tiny" / "tokenizer.json", {"password": "hunter2", "model": {}})
    write_json(ws.data / "records-with-keys.json", [{"api_key": "s3cr3t-value"}, *ALPACA])
    write_json(ws.runs / "run-1" / "events.jsonl", [{"type": "progress", "password": "hunter2"}], lines=True)
    (ws.data / "link.json").symlink_to(outside / "secret.json")
    (ws.data / "link-dataset.json").symlink_to(outside / "dataset.json")
    (ws.data / "linkdir").symlink_to(outside, target_is_directory=True)
    (ws.models / "evil").symlink_to(outside / "model", target_is_directory=True)
    (ws.runs / "escaped").symlink_to(outside, target_is_directory=True)
    return {"ws": ws, "outside": outside, "allowed": allowed, "roots": Roots.for_studio(ws, allowed=[str(allowed)])}


@pytest.fixture
def host(tmp_path, ws, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "outside"))  # ~ is the folder outside
    return build_host(tmp_path, ws)


# (case, path as a page sends it, what the user gets: outside | folder | not_dataset | ok | not_found)
DATASET_CASES = [
    ("etc-passwd", lambda h: "/etc/passwd", "outside"),
    ("etc-shadow", lambda h: "/etc/shadow", "outside"),
    ("proc-environ", lambda h: "/proc/self/environ", "outside"),
    ("absolute-outside-secret", lambda h: str(h["outside"] / "secret.json"), "outside"),
    ("absolute-outside-dataset", lambda h: str(h["outside"] / "dataset.json"), "outside"),
    ("absolute-outside-missing", lambda h: str(h["outside"] / "missing.json"), "outside"),
    ("dotdot-from-workspace", lambda h: str(h["ws"].data / ".." / ".." / "outside" / "secret.json"), "outside"),
    ("dotdot-relative", lambda h: os.path.relpath(h["outside"] / "secret.json"), "outside"),
    ("dotdot-from-bundled-data", lambda h: "data/../../../../../../etc/passwd", "outside"),
    ("dotdot-into-project", lambda h: "data/../lora_studio/catalog.yaml", "outside"),
    ("symlink-file-out", lambda h: str(h["ws"].data / "link.json"), "outside"),
    ("symlink-dataset-out", lambda h: str(h["ws"].data / "link-dataset.json"), "outside"),
    ("symlink-folder-out", lambda h: str(h["ws"].data / "linkdir" / "secret.json"), "outside"),
    ("tilde-secret", lambda h: "~/secret.json", "outside"),
    ("tilde-dataset", lambda h: "~/dataset.json", "outside"),
    ("tilde-other-user", lambda h: "~nobody-here/secret.json", "outside"),
    ("nul-byte", lambda h: str(h["ws"].data / "qa.json") + "\0.json", "outside"),
    ("folder-outside", lambda h: str(h["outside"]), "outside"),
    ("folder-in-workspace", lambda h: str(h["ws"].data), "folder"),
    ("folder-nested", lambda h: str(h["ws"].data / "nested"), "folder"),
    ("folder-bundled", lambda h: "data", "folder"),
    ("model-config-json", lambda h: str(h["ws"].models / "tiny" / "config.json"), "not_dataset"),
    ("tokenizer-json", lambda h: str(h["ws"].models / "tiny" / "tokenizer.json"), "not_dataset"),
    ("first-record-secret-keys", lambda h: str(h["ws"].data / "records-with-keys.json"), "not_dataset"),
    ("events-jsonl", lambda h: str(h["ws"].runs / "run-1" / "events.jsonl"), "not_dataset"),
    ("allowed-non-dataset", lambda h: str(h["allowed"] / "tokens.json"), "not_dataset"),
    ("workspace-dataset", lambda h: str(h["ws"].data / "qa.json"), "ok"),
    ("workspace-jsonl", lambda h: str(h["ws"].data / "qa.jsonl"), "ok"),
    ("bundled-relative", lambda h: "data/huanhuan_sample.json", "ok"),
    ("bundled-absolute", lambda h: str(PROJECT_ROOT / "data" / "huanhuan_sample.json"), "ok"),
    ("allowed-path-file", lambda h: str(h["allowed"] / "ok.json"), "ok"),
    ("allowed-path-dotdot-inside", lambda h: str(h["allowed"] / "x" / ".." / "ok.json"), "ok"),
    ("missing-in-workspace", lambda h: str(h["ws"].data / "missing.json"), "not_found"),
]


def refusal(case, path, call):
    with pytest.raises(StudioError) as error:
        call()
    text, zh = error.value.message, error.value.render("zh")
    assert not any(secret in text or secret in zh for secret in SECRETS), (case, text)
    return text, zh


@pytest.mark.parametrize("case,make,expected", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_dataset_paths_stay_inside_the_roots(host, case, make, expected):
    from lora_studio.data import load_files

    roots, path = host["roots"], make(host)

    def load():
        checked = paths.dataset_files(roots, [path])
        return load_files(checked)

    if expected == "ok":
        assert load()[0].messages[-1]["content"]
        return
    text, zh = refusal(case, path, load)
    if expected == "outside":
        # the roots are named, the path as given, never where a link leads
        assert OUTSIDE in text and "--allow-path DIR" in text and str(host["allowed"]) in text, text
        assert str(host["ws"].root) in text and "工作室可以读写的文件夹" in zh
        assert "\0" in path or path in text
        if "link" in case:
            assert str(host["outside"]) not in text.replace(str(host["allowed"]), "")
    elif expected == "folder":
        assert "this is a folder, not a file" in text
        assert not any(name in text for name in ("qa.json", "hidden-name-1", "nested/")), text  # no listing
    elif expected == "not_dataset":
        assert "this file is not a dataset" in text and "data check" in text, text
    else:
        assert "file not found" in text


def test_a_refusal_says_the_same_whether_the_file_exists(host):
    """Nothing about the host leaks through the refusal: an existing and a missing path read alike."""
    roots = host["roots"]
    texts = []
    for name in ("/etc/passwd", "/etc/no-such-file-here", str(host["outside"] / "secret.json"),
                 str(host["outside"] / "nothing.json"), str(host["outside"])):
        with pytest.raises(DataError) as error:
            paths.dataset_files(roots, [name])
        texts.append(error.value.message.replace(name, "PATH"))
    assert len(set(texts)) == 1, texts


def test_the_library_alone_would_have_quoted_the_keys(host):
    """What the check prevents: data's own message names a non-dataset file's keys (the CLI may)."""
    from lora_studio.data import load_files

    with pytest.raises(DataError) as error:
        load_files([str(host["ws"].models / "tiny" / "config.json")])
    assert "api_key" in error.value.message


# (case, name as typed, expected: outside | ok)
MODEL_CASES = [
    ("absolute-outside", lambda h: str(h["outside"] / "model"), "outside"),
    ("absolute-outside-missing", lambda h: str(h["outside"] / "no-model"), "outside"),
    ("etc", lambda h: "/etc", "outside"),
    ("tilde", lambda h: "~/model", "outside"),
    ("dotdot", lambda h: str(h["ws"].models / ".." / ".." / "outside" / "model"), "outside"),
    ("workspace-link-out", lambda h: "evil", "outside"),
    ("project-folder", lambda h: "./lora_studio", "outside"),
    ("workspace-model", lambda h: "tiny", "ok"),
    ("workspace-model-path", lambda h: str(h["ws"].models / "tiny"), "ok"),
    ("hub-id-not-downloaded", lambda h: "Qwen/Qwen3-0.6B", "ok"),
    ("demo", lambda h: "demo-tiny", "ok"),
]


@pytest.mark.parametrize("case,make,expected", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_folders_stay_inside_the_roots(host, case, make, expected):
    name = make(host)
    check = lambda: paths.check_model(host["roots"], name, host["ws"])  # noqa: E731
    if expected == "ok":
        check()
        return
    text, _ = refusal(case, name, check)
    assert OUTSIDE in text and name in text


def test_model_facts_read_no_config_outside_the_roots(host):
    from lora_studio.ui.tab_model import model_facts

    for name in (str(host["outside"] / "model"), "evil", "~/model"):
        facts = model_facts(name, False, host["ws"], "en", host["roots"])
        assert OUTSIDE in facts and "hunter2" not in facts and "llama" not in facts, facts
    inside = model_facts("tiny", False, host["ws"], "en", host["roots"])
    assert "llama" in inside and OUTSIDE not in inside


def make_run(folder: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    (folder / "adapter").mkdir(parents=True)
    write_json(folder / "adapter" / "adapter_config.json", {"peft_type": "LORA"})
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(folder / "adapter" / "adapter_model.safetensors"))
    (folder / "config.yaml").write_text("model_name_or_path: demo-tiny\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("case", ["outside-run", "link-into-workspace", "checkpoint-link-out", "config-out",
                                  "etc", "tilde", "inside", "inside-adapter-folder", "allowed"])
def test_chat_adapters_stay_inside_the_roots(host, case):
    ws, outside = host["ws"], host["outside"]
    make_run(outside / "run-out")
    inside = make_run(ws.runs / "run-in")
    (ws.runs / "run-link").symlink_to(outside / "run-out", target_is_directory=True)
    checkpoints = ws.runs / "run-ckpt" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (ws.runs / "run-ckpt" / "config.yaml").write_text("model_name_or_path: demo-tiny\n", encoding="utf-8")
    (checkpoints / "checkpoint-5").symlink_to(outside / "run-out" / "adapter", target_is_directory=True)
    loose = ws.data / "loose-adapter"  # an adapter whose run settings are a config.yaml above the roots
    write_json(loose / "adapter_config.json", {"peft_type": "LORA"})
    (host["allowed"].parent / "config.yaml").write_text("model_name_or_path: x\n", encoding="utf-8")
    allowed = make_run(host["allowed"] / "run-allowed")
    given = {"outside-run": str(outside / "run-out"), "link-into-workspace": str(ws.runs / "run-link"),
             "checkpoint-link-out": str(checkpoints / "checkpoint-5"), "etc": "/etc", "tilde": "~/run-out",
             "config-out": str(host["allowed"]), "inside": str(inside),
             "inside-adapter-folder": str(inside / "adapter"), "allowed": str(allowed)}[case]
    if case == "config-out":
        write_json(host["allowed"] / "adapter_config.json", {"peft_type": "LORA"})
    if case in ("inside", "inside-adapter-folder", "allowed"):
        assert paths.adapter_folder(host["roots"], given).name == "adapter"
        return
    text, _ = refusal(case, given, lambda: paths.adapter_folder(host["roots"], given))
    assert OUTSIDE in text and given in text


@pytest.mark.parametrize("name", ["../../etc", "..", ".", "", "escaped", "a/b", "/etc/passwd", "run-1/../..",
                                  "no-such-run", "run-1\0"])
def test_a_run_to_resume_is_a_folder_of_the_workspace_runs(host, name):
    with pytest.raises(JobError) as error:
        paths.run_folder(host["roots"], host["ws"], name, ["run-1"])
    text = error.value.message
    assert ("there is no run called" in text and "run-1" in text) or OUTSIDE in text, text
    assert paths.run_folder(host["roots"], host["ws"], "run-1", ["run-1"]) == host["ws"].runs / "run-1"


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "presets/demo-tiny.yaml",
                                  str(PROJECT_ROOT / "presets" / "demo-tiny.yaml"), "~/secret", "demo-tiny.yaml",
                                  "", "linked"])
def test_a_preset_is_named_not_pathed(host, name):
    (host["ws"].presets).mkdir(parents=True, exist_ok=True)
    (host["ws"].presets / "linked.yaml").symlink_to(host["outside"] / "secret.json")
    with pytest.raises(ConfigError) as error:
        paths.preset_file(host["roots"], host["ws"], name)
    text = error.value.message
    assert ("there is no preset called" in text and "demo-tiny" in text) or OUTSIDE in text, text
    assert not any(secret in text for secret in SECRETS)
    assert paths.preset_file(host["roots"], host["ws"], "demo-tiny").name == "demo-tiny.yaml"


def test_allow_path_must_be_a_folder(tmp_path, ws):
    with pytest.raises(ConfigError, match="--allow-path must name a folder that exists"):
        Roots.for_studio(ws, allowed=[str(tmp_path / "missing")])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError):
        Roots.for_studio(ws, allowed=[str(tmp_path / "file.txt")])
    roots = Roots.for_studio(ws, allowed=[str(tmp_path), str(tmp_path)])
    assert roots.folders.count(tmp_path.resolve()) == 1 and ws.root in roots.folders
    assert (PROJECT_ROOT / "data") in roots.folders and (PROJECT_ROOT / "presets") in roots.folders
    assert PROJECT_ROOT not in roots.folders  # the code itself is not for the page to read


@pytest.mark.parametrize("content,expected", [
    ('[{"instruction": "q", "output": "a"}]', True),
    ('\ufeff[{"messages": [{"role": "user", "content": "x"}]}]', True),
    ('{"instruction": "q", "output": "a"}\n{"oops"', True),  # JSONL first line fine
    ('{"api_key": "x"}', False),
    ('[{"api_key": "x"}, {"instruction": "q", "output": "a"}]', False),
    ('[1, 2, 3]', False),
    ('["text"]', False),
    ('[]', True), ('', True), ('   ', True), ('[{"instruction": ', True),  # the library says
    ('{"a": ', False),  # a JSON object is never a dataset, whole or not
    ('"just a string"', True), ('42', True),
], ids=lambda v: repr(v)[:30] if isinstance(v, str) else str(v))
def test_what_counts_as_a_dataset(tmp_path, content, expected):
    suffix = ".jsonl" if "\n" in content else ".json"
    path = tmp_path / f"file{suffix}"
    path.write_text(content, encoding="utf-8")
    assert paths.looks_like_dataset(path) is expected


def test_a_first_record_longer_than_the_head_is_read_whole(tmp_path):
    long = [{"instruction": "问" * (paths.HEAD // 2), "output": "答"}]
    path = write_json(tmp_path / "long.json", long)
    assert path.stat().st_size > paths.HEAD and paths.looks_like_dataset(path)
    other = write_json(tmp_path / "long-secret.json", [{"secret": "x" * paths.HEAD}])
    assert not paths.looks_like_dataset(other)


def test_the_model_error_kind_for_model_paths(host):
    with pytest.raises(ModelError):
        paths.check_model(host["roots"], "/etc", host["ws"])
