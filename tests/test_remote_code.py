"""Issue 10 item 2: a model's own code runs only with the user's consent in this session, never a file's.

Fault injection: tiny model folders ship Python files (tiny_model_fixture.add_remote_code) that create a
marker file when imported. Every path that loads a model or a tokenizer is tried with each kind of
shipped code, while a run folder's or preset's config.yaml says `trust_remote_code: true`: without the
user's consent the marker never appears and a refusal says how to opt in (in both languages); with
consent (the keyword argument, the CLI flag) the code is allowed to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lora_studio import cli, models
from lora_studio.chat import ChatEngine, resolve_adapter_dir
from lora_studio.config import RunConfig, apply_overrides, from_dict, load_yaml, save_yaml
from lora_studio.errors import ConfigError, StudioError
from lora_studio.events import Failed, Finished
from lora_studio.training import TrainingJob
from lora_studio.workspace import Workspace

from .tiny_model_fixture import (PALACE_QA, REMOTE_KINDS, add_remote_code, build_tiny_model, copy_model,
                                 interrupted_copy, train_tiny_run)

OPT_IN_EN = ("ships its own Python code", "--trust-remote-code", '"Trust remote code"')
OPT_IN_ZH = ("自带 Python 代码", "--trust-remote-code", "信任远程代码")


@pytest.fixture(autouse=True)
def modules_cache(tmp_path_factory, monkeypatch):
    """Where transformers copies a model's code before importing it: fixed when transformers was
    imported (~/.cache/huggingface/modules), so point it into the test's temporary folders instead."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.getbasetemp() / "hf-modules"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model folder, finished run on it): the code-free originals every case copies."""
    root = tmp_path_factory.mktemp("remote-code")
    model = build_tiny_model(root / "tiny")
    return model, train_tiny_run(model, Workspace(root / "workspace"))


@dataclass
class Case:
    model: Path      # a copy of the tiny model that ships code
    run: Path        # a resumable copy of the tiny run, trained on `model`, its config.yaml saying true
    preset: Path     # a preset YAML for `model` that says trust_remote_code: true
    marker: Path     # created by the shipped code if it ever runs
    ws: Workspace
    consent: bool

    @property
    def consent_kwargs(self) -> dict:
        # no keyword at all must mean no consent: the default is what protects a caller who forgets
        return {"trust_remote_code": True} if self.consent else {}

    @property
    def flag(self) -> list[str]:
        return ["--trust-remote-code"] if self.consent else []


@dataclass
class Outcome:
    ok: bool
    en: str = ""
    zh: str = ""


def _error(exc: StudioError) -> Outcome:
    return Outcome(False, exc.render("en"), exc.render("zh"))


def _library(call):
    def attempt(case: Case) -> Outcome:
        try:
            call(case)
        except StudioError as exc:
            return _error(exc)
        return Outcome(True)
    return attempt


def _job(make):
    def attempt(case: Case) -> Outcome:
        try:
            job = make(case).start()
        except StudioError as exc:
            return _error(exc)
        assert job.join(120), "the job did not end"
        failed = job.events.last(Failed)
        if failed is not None:
            return Outcome(False, failed.text.render("en"), failed.text.render("zh"))
        assert isinstance(job.events.last(Finished), Finished)
        return Outcome(True)
    return attempt


def _cli(make_args):
    def attempt(case: Case, capsys=None) -> Outcome:
        outputs = {}
        for lang in ("en", "zh"):
            code = cli.main([*make_args(case), *case.flag, "--lang", lang])
            outputs[lang] = capsys.readouterr().err
            if code == 0:
                return Outcome(True)
            assert "internal error" not in outputs[lang] and "内部错误" not in outputs[lang], outputs[lang]
        return Outcome(False, outputs["en"], outputs["zh"])
    attempt.cli = True
    return attempt


def _config(case: Case) -> RunConfig:
    return load_yaml(case.preset)  # the preset says true; only `consent` may allow the code


ENTRY_POINTS = {
    "models.load": _library(lambda c: models.load(_config(c), c.ws, **c.consent_kwargs)),
    "models.renderer_for": _library(lambda c: models.renderer_for(_config(c), c.ws, **c.consent_kwargs)),
    "ChatEngine.load_base": _library(lambda c: ChatEngine(c.ws).load_base(_config(c), **c.consent_kwargs)),
    "ChatEngine.load_run": _library(
        lambda c: ChatEngine(c.ws).load_run(resolve_adapter_dir(c.run), **c.consent_kwargs)),
    "TrainingJob": _job(lambda c: TrainingJob(_config(c), c.ws, **c.consent_kwargs)),
    "TrainingJob.resume": _job(lambda c: TrainingJob.resume(c.run, c.ws, **c.consent_kwargs)),
    "cli chat --adapter RUN": _cli(lambda c: ["chat", "--adapter", str(c.run), "--prompt", "你好",
                                              "--max-new-tokens", "2", "--temperature", "0"]),
    "cli data check --model": _cli(lambda c: ["data", "check", str(PALACE_QA), "--model", str(c.model)]),
    "cli train PRESET": _cli(lambda c: ["train", str(c.preset)]),
    "cli train --resume RUN": _cli(lambda c: ["train", "--resume", str(c.run)]),
    "cli train --dry-run": _cli(lambda c: ["train", str(c.preset), "--dry-run"]),
}
# Paths that load only a tokenizer run no model code: a model whose code is only its model's loads there.
TOKENIZER_ONLY = ("models.renderer_for", "cli data check --model")
# The estimate builds the model from config.json with transformers' own classes; it never runs model code.
NEVER_RUNS_CODE = ("cli train --dry-run",)


def expected_without_consent(entry: str, kind: str) -> str:
    if entry in NEVER_RUNS_CODE:
        return "ok" if kind == "tokenizer" else "no estimate"
    if entry in TOKENIZER_ONLY and kind == "model":
        return "ok"
    return "refused"


def make_case(tiny, tmp_path: Path, kind: str, consent: bool) -> Case:
    base_model, base_run = tiny
    marker = tmp_path / "remote-code-ran"
    model = add_remote_code(copy_model(base_model, tmp_path), kind, marker)
    ws = Workspace(tmp_path / "workspace")
    # Both a run folder and a preset say true, as an old run folder or a hostile download might.
    # Checkpointing is set, not 'auto': see test_auto_checkpointing_of_a_consented_custom_model.
    run = interrupted_copy(base_run, ws.runs / "old-run", model_name_or_path=str(model), trust_remote_code=True,
                           gradient_checkpointing=False)
    preset = tmp_path / "preset.yaml"
    values = RunConfig(model_name_or_path=str(model), data_files=[str(PALACE_QA)], cutoff_len=64, max_steps=1,
                       per_device_train_batch_size=2, gradient_accumulation_steps=1, save_steps=10,
                       gradient_checkpointing=False, run_name="fresh").diff_from_defaults()
    preset.write_text(yaml.safe_dump({**values, "trust_remote_code": True}), encoding="utf-8")
    return Case(model, run, preset, marker, ws, consent)


def attempt(entry: str, case: Case, capsys) -> Outcome:
    call = ENTRY_POINTS[entry]
    return call(case, capsys) if getattr(call, "cli", False) else call(case)


@pytest.mark.parametrize("kind", REMOTE_KINDS)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_without_consent_no_shipped_code_runs_and_the_refusal_says_how_to_opt_in(entry, kind, tiny, tmp_path,
                                                                                 capsys):
    case = make_case(tiny, tmp_path, kind, consent=False)
    outcome = attempt(entry, case, capsys)
    assert not case.marker.exists(), f"{entry} ran the model's code without consent"
    expected = expected_without_consent(entry, kind)
    if expected == "ok":
        assert outcome.ok, outcome.en  # no code was needed here, and none ran
    elif expected == "no estimate":
        assert not outcome.ok and "needs its own code" in outcome.en and "需要模型自带的代码" in outcome.zh
    else:
        assert not outcome.ok
        for words in OPT_IN_EN:
            assert words in outcome.en, outcome.en
        for words in OPT_IN_ZH:
            assert words in outcome.zh, outcome.zh
        assert "Internal error" not in outcome.en and "internal error" not in outcome.en


@pytest.mark.parametrize("kind", REMOTE_KINDS)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_with_consent_the_shipped_code_is_allowed_to_run(entry, kind, tiny, tmp_path, capsys):
    case = make_case(tiny, tmp_path, kind, consent=True)
    outcome = attempt(entry, case, capsys)
    if entry in NEVER_RUNS_CODE:
        assert not case.marker.exists()
        return
    if entry in TOKENIZER_ONLY and kind == "model":
        # AutoTokenizer reads the model's config too, through its code once that is allowed
        assert outcome.ok, outcome.en
        return
    assert case.marker.exists(), f"{entry}: consent was given but the code did not run ({outcome.en})"
    assert outcome.ok, outcome.en


@pytest.mark.parametrize("command", [
    ["train", "PRESET", "--set", "trust_remote_code=true"],
    ["train", "PRESET", "--dry-run", "--set", "trust_remote_code=true"],
    ["train", "PRESET", "--set", "trust_remote_code=True"],
    ["train", "PRESET", "--set", " trust_remote_code =yes"],
])
def test_set_cannot_consent_and_says_where_consent_is_given(command, tiny, tmp_path, capsys):
    case = make_case(tiny, tmp_path, "both", consent=False)
    code = cli.main([str(case.preset) if arg == "PRESET" else arg for arg in command] + ["--lang", "en"])
    err = capsys.readouterr().err
    assert code == 2 and not case.marker.exists()
    assert "'trust_remote_code' is no longer a setting" in err and "add --trust-remote-code" in err, err
    with pytest.raises(ConfigError, match="no longer a setting"):
        apply_overrides(RunConfig(), ["trust_remote_code=true"])


@pytest.mark.parametrize("value", [True, False, "true", 1, None])
def test_files_and_mappings_lose_the_old_key(value, tmp_path):
    config = from_dict({"trust_remote_code": value, "r": 4})
    assert config.r == 4 and not hasattr(config, "trust_remote_code")
    old_run = tmp_path / "config.yaml"
    old_run.write_text(yaml.safe_dump({"trust_remote_code": value, "model_name_or_path": "demo-tiny"}))
    loaded = load_yaml(old_run)
    assert "trust_remote_code" not in loaded.to_dict()
    save_yaml(loaded, old_run)
    assert "trust_remote_code" not in old_run.read_text(encoding="utf-8")


def test_a_known_model_type_with_an_auto_map_loads_natively_without_running_code(tiny, tmp_path, ws):
    """Many hub models keep an auto_map for a type transformers has: no consent needed, no code run."""
    import json

    marker = tmp_path / "ran"
    model = add_remote_code(copy_model(tiny[0], tmp_path), "model", marker)
    config_file = model / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "model_type": "llama"}))
    loaded = models.load(RunConfig(model_name_or_path=str(model)), ws)
    assert type(loaded.model).__module__.startswith("transformers.models.llama") and not marker.exists()


def test_the_refusal_names_the_files_that_would_run(tiny, tmp_path, ws):
    model = add_remote_code(copy_model(tiny[0], tmp_path), "both", tmp_path / "ran")
    with pytest.raises(StudioError) as raised:
        models.load(RunConfig(model_name_or_path=str(model)), ws)
    assert "(configuration_x.py, modeling_x.py, tokenization_x.py)" in raised.value.message
    assert raised.value.where == str(model)


def test_auto_checkpointing_of_a_consented_custom_model(tiny, tmp_path):
    from lora_studio.recipe import checkpointing_decision

    model = add_remote_code(copy_model(tiny[0], tmp_path), "model", tmp_path / "ran")
    loaded = models.load(RunConfig(model_name_or_path=str(model)), Workspace(tmp_path / "ws"), trust_remote_code=True)
    needed, why = checkpointing_decision(RunConfig(gradient_checkpointing="auto"), loaded.model.config, 4)
    assert needed is False and why.render("en").startswith("gradient_checkpointing auto: off")
