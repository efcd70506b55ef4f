"""RunConfig: YAML round trips, presets, and clear errors for unknown keys and out-of-range values."""

from pathlib import Path

import pytest
import yaml

from lora_studio.config import (RunConfig, apply_overrides, dump_yaml, fields_by_name, from_dict, load_yaml,
                                save_yaml, workspace)
from lora_studio.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def test_every_field_has_group_and_bilingual_help():
    for name, spec in fields_by_name().items():
        assert spec.metadata["group"] in ("model", "data", "template", "lora", "training", "output"), name
        assert spec.metadata["help"] and spec.metadata["help_zh"], name


def test_yaml_round_trip(tmp_path):
    config = RunConfig(r=16, target_modules=["q_proj", "v_proj"], gradient_checkpointing=True)
    assert load_yaml(save_yaml(config, tmp_path / "c.yaml")) == config


def test_saved_preset_holds_only_changes(tmp_path):
    config = RunConfig(learning_rate=3e-4)
    assert yaml.safe_load(dump_yaml(config, only_changes=True)) == {"learning_rate": 3e-4}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_list_only_differences(preset):
    config = load_yaml(preset)
    written = yaml.safe_load(preset.read_text(encoding="utf-8"))
    assert set(written) == set(config.diff_from_defaults()), "a preset repeats a default"


def test_tutorial_preset_is_the_tutorials_recipe():
    c = load_yaml(ROOT / "presets" / "index-1.9b-chat-huanhuan.yaml")
    assert (c.r, c.lora_alpha, c.lora_dropout) == (8, 32, 0.1)
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (c.learning_rate, c.per_device_train_batch_size, c.gradient_accumulation_steps) == (1e-4, 4, 4)
    assert (c.num_train_epochs, c.cutoff_len, c.gradient_checkpointing, c.save_steps) == (3, 384, True, 100)
    assert c.system_prompt == "现在你要扮演皇帝身边的女人--甄嬛"
    assert (c.model_name_or_path, c.model_source) == ("IndexTeam/Index-1.9B-Chat", "modelscope")
    assert c.trust_remote_code is False


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora_alpah: 32\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert "lora_alpah" in str(err.value) and "lora_alpha" in str(err.value) and "bad.yaml" in str(err.value)


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
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_workspace_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path / "ws"))
    assert workspace() == (tmp_path / "ws").resolve()
    monkeypatch.delenv("LORA_STUDIO_HOME")
    assert workspace() == (Path.cwd() / "workspace").resolve()
