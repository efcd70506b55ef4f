"""Pre-flight estimates: LoRA parameter counts, optimizer steps proven against a real Trainer, memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.catalog import find_entry
from lora_studio.config import RunConfig, load_yaml
from lora_studio.errors import ConfigError
from lora_studio.estimate import (count_trainable, lora_config, memory_estimate, needs_gradient_checkpointing,
                                  optimizer_steps, preflight)
from lora_studio.index_model import INDEX_1_9B_CONFIG

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "presets" / "index-1.9b-chat-huanhuan.yaml"
HUANHUAN = ROOT.parent / "shared" / "data" / "huanhuan.json"
TUTORIAL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY_LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
              "tie_word_embeddings": False}


def tutorial_config(**changes) -> RunConfig:
    values = dict(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=TUTORIAL_TARGETS,
                  per_device_train_batch_size=4, gradient_accumulation_steps=4, num_train_epochs=3,
                  cutoff_len=384)
    return RunConfig(**{**values, **changes})


# --- trainable parameters ------------------------------------------------------------------------
def test_index_tutorial_lora_has_exactly_the_tutorials_trainable_count():
    trainable, total = count_trainable(INDEX_1_9B_CONFIG, tutorial_config())
    assert trainable == 11_575_296
    assert total - trainable == find_entry("index-1.9b-chat").parameters
    assert round(100 * trainable / total, 2) == 0.53  # the tutorial's 0.53%


def test_all_linear_means_every_linear_layer_but_the_head():
    trainable, _ = count_trainable(INDEX_1_9B_CONFIG, tutorial_config(target_modules="all-linear"))
    assert trainable == 11_575_296  # Llama's linear layers are exactly the tutorial's seven


def test_meta_count_equals_the_count_of_a_real_model(tmp_path):
    """The estimate builds nothing real; a real tied-embedding model wrapped by training agrees."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    qwen = {**TINY_LLAMA, "model_type": "qwen2", "tie_word_embeddings": True, "num_key_value_heads": 1}
    config = RunConfig(r=4, target_modules="all-linear", use_dora=True)
    torch.manual_seed(0)
    real = AutoModelForCausalLM.from_config(AutoConfig.for_model(**qwen))
    expected = get_peft_model(real, lora_config(config, real)).get_nb_trainable_parameters()
    assert count_trainable(qwen, config) == expected


def test_unknown_target_module_names_the_module_and_the_choices():
    with pytest.raises(ConfigError, match="target_modules names wq, which this model does not have") as info:
        count_trainable(TINY_LLAMA, RunConfig(target_modules=["q_proj", "wq"]))
    assert "down_proj" in info.value.message and "lm_head" not in info.value.message


# --- optimizer steps -----------------------------------------------------------------------------
def test_tutorial_steps_on_3729_records():
    assert optimizer_steps(3729, tutorial_config()) == (234, 702)  # 933 batches = 233 x 4 + 1
    assert optimizer_steps(3729, tutorial_config(max_steps=50)) == (234, 50)
    assert optimizer_steps(3729, tutorial_config(num_train_epochs=0.5)) == (234, 117)
    assert optimizer_steps(3729, tutorial_config(), world_size=2) == (117, 351)
    report = preflight(tutorial_config(), INDEX_1_9B_CONFIG, 3729)
    assert (report.steps_per_epoch, report.total_steps, report.trainable_params) == (234, 702, 11_575_296)
    assert any("counted 699" in note for note in report.notes)


@pytest.mark.parametrize("examples,batch,accumulation,epochs,max_steps", [
    (37, 4, 4, 3.0, -1),    # 10 batches an epoch: a partial accumulation of 2 closes each epoch
    (37, 4, 3, 1.5, -1),    # fractional epochs
    (32, 4, 4, 2.0, -1),    # everything divides
    (9, 4, 4, 2.0, -1),     # fewer batches than one accumulation
    (37, 4, 4, 3.0, 7),     # max_steps wins
])
def test_step_formula_matches_a_real_trainer(examples, batch, accumulation, epochs, max_steps, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    class CountSteps(TrainerCallback):
        def __init__(self):
            self.steps, self.planned = 0, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.planned = state.max_steps

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA))
    data = Dataset.from_list([{"input_ids": [1, 2, 3, i % 50 + 4], "labels": [1, 2, 3, i % 50 + 4]}
                              for i in range(examples)])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, num_train_epochs=epochs,
                             max_steps=max_steps, use_cpu=True, report_to=[], save_strategy="no",
                             logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0)
    counter = CountSteps()
    Trainer(model=model, args=args, train_dataset=data, callbacks=[counter]).train()
    run = RunConfig(per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                    num_train_epochs=epochs, max_steps=max_steps)
    _, total = optimizer_steps(examples, run)
    assert counter.planned == total and counter.steps == total


# --- memory --------------------------------------------------------------------------------------
def test_index_memory_matches_the_catalog_and_reacts_to_settings():
    config = tutorial_config()
    bf16 = memory_estimate(INDEX_1_9B_CONFIG, config, 2, gradient_checkpointing=True)
    assert round(bf16["total"], 1) == find_entry("index-1.9b-chat").train_memory_gb_bf16
    assert bf16["total"] == pytest.approx(sum(v for k, v in bf16.items() if k != "total"))
    assert bf16["weights"] == pytest.approx(2 * 2_172_819_456 / 1e9)
    assert bf16["lora+optimizer"] == pytest.approx(16 * 11_575_296 / 1e9)
    no_checkpointing = memory_estimate(INDEX_1_9B_CONFIG, config, 2, gradient_checkpointing=False)
    one_layer = 2 * (4 * 384) * (12 * 2048 + 4 * 5888)  # catalog.yaml: add layers x one recomputed layer
    assert no_checkpointing["activations"] - bf16["activations"] == pytest.approx(36 * one_layer / 1e9)
    fp32 = memory_estimate(INDEX_1_9B_CONFIG, config, 4, gradient_checkpointing=True)
    assert fp32["weights"] == pytest.approx(2 * bf16["weights"])
    smaller = memory_estimate(INDEX_1_9B_CONFIG, config.replace(cutoff_len=192), 2, True)
    assert smaller["activations"] < bf16["activations"] and smaller["weights"] == bf16["weights"]


def test_auto_checkpointing_turns_on_only_when_memory_is_short(monkeypatch):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_studio import estimate

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).to(torch.float32)
    needed, why = needs_gradient_checkpointing(RunConfig(), model)
    assert not needed and "GB" in why
    monkeypatch.setattr(estimate, "device_memory", lambda: (0.1, "GPU test"))
    needed, why = needs_gradient_checkpointing(RunConfig(), model)
    assert needed and "0.1 GB of GPU test" in why
    report = preflight(RunConfig(gradient_checkpointing="auto"), INDEX_1_9B_CONFIG, 100)
    assert report.gradient_checkpointing_needed and report.gradient_checkpointing


# --- the preset's dry run, as a user runs it ----------------------------------------------------
@pytest.mark.skipif(not HUANHUAN.is_file(), reason="needs ../shared/data/huanhuan.json")
def test_index_preset_dry_run_downloads_nothing_and_reports_the_tutorial_numbers(workspace):
    assert load_yaml(PRESET).model_name_or_path == "IndexTeam/Index-1.9B-Chat"
    env = {**os.environ, "LORA_STUDIO_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "studio.py", "train", str(PRESET), "--dry-run",
                             "--set", f"data_files=[{HUANHUAN}]"], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Trainable parameters: 11,575,296 of 2,184,394,752 (0.53%)" in out
    assert "Training examples: 3,729" in out and "Steps per epoch: 234" in out
    assert "Total optimizer steps: 702" in out and "counted 699" in out
    assert "not downloaded" in out and "Memory estimate" in out
    assert not (workspace / "models").exists()  # nothing was downloaded or built
