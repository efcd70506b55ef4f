"""RunConfig and SamplingConfig: metadata, YAML round trips, presets by name, and clear errors in zh and en."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from lora_studio.config import (GROUPS, RunConfig, Setting, apply_overrides, dump_yaml, fields_by_name,
                                fields_in_group, fields_with, from_dict, load_yaml, save_yaml)
from lora_studio.errors import ConfigError
from lora_studio.presets import find_preset, load_preset, preset_files
from lora_studio.sampling import SamplingConfig, SamplingSetting, sampling_from_dict
from lora_studio.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("cls", [RunConfig, SamplingConfig], ids=lambda c: c.__name__)
def test_every_field_has_a_label_and_help_in_both_languages(cls):
    for spec in dataclasses.fields(cls):
        meta = spec.metadata
        assert meta["help"] and meta["help_zh"] and meta["label_zh"], spec.name
    for name, spec in fields_by_name().items():
        assert spec.metadata["group"] in GROUPS, name


def test_setting_constants_are_the_field_names():
    assert Setting.learning_rate == "learning_rate" and SamplingSetting.top_p == "top_p"
    assert [s.value for s in Setting] == [f.name for f in dataclasses.fields(RunConfig)]
    assert [s.value for s in SamplingSetting] == [f.name for f in dataclasses.fields(SamplingConfig)]
    with pytest.raises(AttributeError):
        Setting.lora_rank  # noqa: B018 - a misspelt name fails at once


def test_groups_and_facts_select_settings():
    assert fields_in_group("lora")[:3] == [Setting.r, Setting.lora_alpha, Setting.lora_dropout]
    assert sum((fields_in_group(g) for g in GROUPS), []) == [f.name for f in dataclasses.fields(RunConfig)]
    assert {Setting.model_name_or_path, Setting.per_device_train_batch_size, Setting.cutoff_len} <= set(
        fields_with("pace"))
    assert Setting.learning_rate not in fields_with("pace")


def test_sampling_is_built_by_keyword_only():
    with pytest.raises(TypeError):
        SamplingConfig(256, 0.3)  # positional: reordering the fields could swap top_p and top_k
    sampling = sampling_from_dict({SamplingSetting.top_k: 7, SamplingSetting.top_p: 0.5})
    assert (sampling.top_k, sampling.top_p, sampling.temperature) == (7, 0.5, SamplingConfig().temperature)


def test_sampling_values_are_checked_like_settings():
    with pytest.raises(ConfigError) as err:
        sampling_from_dict({"top_p": 1.5}, where="chat")
    assert err.value.message == "chat: 'top_p' is 1.5, outside the allowed range [0.0, 1.0]."
    with pytest.raises(ConfigError, match="unknown setting 'topp'"):
        sampling_from_dict({"topp": 0.5})


def test_yaml_round_trip(tmp_path):
    config = RunConfig(r=16, target_modules=["q_proj", "v_proj"], gradient_checkpointing=True)
    assert load_yaml(save_yaml(config, tmp_path / "c.yaml")) == config
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_saved_preset_holds_only_changes():
    config = RunConfig(learning_rate=3e-4)
    assert yaml.safe_load(dump_yaml(config, only_changes=True)) == {"learning_rate": 3e-4}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_list_only_differences(preset):
    config = load_yaml(preset)
    written = yaml.safe_load(preset.read_text(encoding="utf-8"))
    assert set(written) == set(config.diff_from_defaults()), "a preset repeats a default"


def test_presets_are_found_by_name_or_path(ws):
    assert set(preset_files(ws)) == {p.stem for p in PRESETS}
    assert find_preset("demo-tiny", ws) == ROOT / "presets" / "demo-tiny.yaml"
    assert load_preset("presets/demo-tiny.yaml", ws) == load_preset("demo-tiny", ws)
    ws.presets.mkdir(parents=True)
    (ws.presets / "demo-tiny.yaml").write_text("r: 4\n")  # the user's own preset wins
    assert load_preset("demo-tiny", ws).r == 4


def test_an_unknown_preset_lists_the_known_ones(ws):
    with pytest.raises(ConfigError) as err:
        find_preset("demo-tiyn", ws)
    names = ", ".join(p.stem for p in PRESETS)
    assert err.value.message == f"presets: no preset called 'demo-tiyn'. Pick one of: {names}; or give a YAML file's path."
    with pytest.raises(ConfigError, match="config file not found"):
        find_preset("missing.yaml", ws)


def test_tutorial_preset_is_the_tutorials_recipe():
    c = load_yaml(ROOT / "presets" / "index-1.9b-chat-huanhuan.yaml")
    assert (c.r, c.lora_alpha, c.lora_dropout) == (8, 32, 0.1)
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (c.learning_rate, c.per_device_train_batch_size, c.gradient_accumulation_steps) == (1e-4, 4, 4)
    assert (c.num_train_epochs, c.cutoff_len, c.gradient_checkpointing, c.save_steps) == (3, 384, True, 100)
    assert c.system_prompt == "现在你要扮演皇帝身边的女人--甄嬛"
    assert (c.model_name_or_path, c.model_source) == ("IndexTeam/Index-1.9B-Chat", "modelscope")
    assert "trust_remote_code" not in c.to_dict()  # consent is never a preset's (config.RETIRED_KEYS)


def test_unknown_key_is_named_with_a_suggestion_in_both_languages(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora_alpah: 32\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert err.value.render("en") == f"{path}: unknown setting 'lora_alpah'. Did you mean 'lora_alpha'?"
    assert err.value.render("zh") == f"{path}：未知的设置项 'lora_alpah'。你是不是想写 'lora_alpha'？"


@pytest.mark.parametrize("key,value,expected", [
    ("r", 0, "[1, 1024]"),
    ("lora_dropout", 1.5, "[0.0, 0.9]"),
    ("learning_rate", "fast", "must be a number"),
    ("per_device_train_batch_size", 2.5, "whole number"),
    ("dedupe", "yes", "true or false"),
    ("model_source", "github", "modelscope, huggingface"),
    ("gradient_checkpointing", "sometimes", "auto, True, False"),
    ("target_modules", 3, "all-linear"),
    ("data_files", [], "file path"),
])
def test_out_of_range_values_name_key_and_range(key, value, expected):
    with pytest.raises(ConfigError) as err:
        from_dict({key: value})
    assert key in str(err.value) and expected in str(err.value)


def test_cli_overrides_parse_yaml_values():
    config = apply_overrides(RunConfig(), ["learning_rate=2e-4", "target_modules=q_proj,v_proj",
                                           "gradient_checkpointing=false", "run_name=007"])
    assert config.learning_rate == 2e-4 and config.target_modules == ["q_proj", "v_proj"]
    assert config.gradient_checkpointing is False and config.run_name == "007"
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(RunConfig(), ["learning_rate"])


def test_invalid_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("r: [8\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError) as err:
        load_yaml(tmp_path / "missing.yaml")
    assert err.value.render("zh").startswith(f"{tmp_path / 'missing.yaml'}：找不到配置文件。")


def test_the_workspace_is_an_object_from_the_flag_or_the_environment(tmp_path):
    assert Workspace.from_env({"LORA_STUDIO_HOME": str(tmp_path / "ws")}).root == (tmp_path / "ws").resolve()
    assert Workspace.from_env({"LORA_STUDIO_HOME": str(tmp_path / "ws")}, tmp_path / "flag").root == (
        tmp_path / "flag").resolve()
    assert Workspace.from_env({}).root == (Path.cwd() / "workspace").resolve()
    ws = Workspace(tmp_path)
    assert (ws.runs, ws.models, ws.presets) == (tmp_path / "runs", tmp_path / "models", tmp_path / "presets")
