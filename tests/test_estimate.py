"""Pre-flight estimates: LoRA parameter counts, optimizer steps proven against a real Trainer, memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.catalog import find_entry
from lora_studio.config import RunConfig, load_yaml
from lora_studio.errors import ConfigError
from lora_studio.estimate import (count_trainable, dry_run, memory_estimate, optimizer_steps, preflight,
                                  preflight_report)
from lora_studio.index_model import INDEX_1_9B_CONFIG
from lora_studio.recipe import checkpointing_decision, lora_config

ROOT = Path(__file__).resolve().parent.parent
PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"
PRESET = ROOT / "presets" / "index-1.9b-chat-huanhuan.yaml"
HUANHUAN = ROOT.parent / "shared" / "data" / "huanhuan.json"
TUTORIAL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY_LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
              "tie_word_embeddings": False}


def english_words(text: str, allowed: str = "") -> list[str]:
    """Latin-letter words in a Chinese text that are ours, not names: what a Chinese reader should not see.

    Names, units and terms are allowed: the ones in `allowed` (model names, paths) and the few below."""
    terms = {"LoRA", "Studio", "B", "KB", "MB", "GB", "GPU", "RAM", "bf16", "float32", "bfloat16", "auto", "transformers", "x",
             "gradient_checkpointing", "cutoff_len", "config", "yaml", "s"}
    names = set(re.findall(r"[A-Za-z][\w.+-]*", allowed))
    return [w for w in re.findall(r"[A-Za-z][A-Za-z0-9_]*", text) if w not in terms and not any(w in n for n in names)]


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
    assert "counted 699." in report.to_text()
    assert "只算 699 步" in report.to_text("zh")


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
    from lora_studio import estimate
    from lora_studio.i18n import msg

    on, why = checkpointing_decision(RunConfig(), TINY_LLAMA, 4)
    assert not on and re.fullmatch(r"gradient_checkpointing auto: off \(about [\d.]+ GB without it, "
                                   r"[\d.]+ GB of RAM\)", why.render("en"))
    monkeypatch.setattr(estimate, "device_memory", lambda: (0.1, msg("training.device_gpu", name="Test")))
    on, why = checkpointing_decision(RunConfig(), TINY_LLAMA, 4)
    assert on and why.render("en").endswith(", 0.1 GB of GPU Test)")
    assert why.render("zh").startswith("梯度检查点 gradient_checkpointing auto：开启（不开约需 ")
    assert checkpointing_decision(RunConfig(gradient_checkpointing=False), TINY_LLAMA, 4)[1].render("en") \
        == "gradient_checkpointing: off (as set)"
    report = preflight(RunConfig(gradient_checkpointing="auto"), INDEX_1_9B_CONFIG, 100)
    assert report.gradient_checkpointing and "gradient checkpointing on" in report.to_text()
    assert "Note: gradient_checkpointing auto: on (about " in report.to_text()
    explicit = preflight(RunConfig(gradient_checkpointing=False), INDEX_1_9B_CONFIG, 100)
    assert not explicit.gradient_checkpointing and "gradient_checkpointing auto" not in explicit.to_text()
    assert explicit.memory_gb["activations"] > report.memory_gb["activations"]


# --- what a person reads ------------------------------------------------------------------------
def test_the_dry_run_reads_the_same_in_chinese_with_no_english_words_of_ours(ws, demo_model_dir):
    config = RunConfig(model_name_or_path=str(demo_model_dir), data_files=[str(PALACE_QA)],
                       per_device_train_batch_size=3, gradient_accumulation_steps=4, val_size=0.1)
    report = dry_run(config, ws)
    english = report.to_text("en").splitlines()
    assert english[0] == f"Model: {demo_model_dir}"
    assert english[1].startswith("Trainable parameters: ") and english[2] == "Training examples: 18"
    assert english[3:5] == ["Steps per epoch: 2", "Total optimizer steps: 6"]
    chinese = report.to_text("zh").splitlines()
    assert len(chinese) == len(english) == len(report.lines())
    assert chinese[2:5] == ["训练样本：18 个", "每轮步数：2", "总优化步数：6"]
    assert english_words("\n".join(chinese), allowed=f"{demo_model_dir} {ws.runs}") == []
    # and the other way round: no Chinese in the English lines but the names
    assert not re.search(r"[\u4e00-\u9fff]", report.to_text("en"))


def test_the_preflight_report_times_the_run_from_a_past_one(ws, demo_model_dir):
    from lora_studio.runs import RunInfo

    config = RunConfig(model_name_or_path=str(demo_model_dir), data_files=[str(PALACE_QA)], max_steps=300)
    unknown = preflight_report(config, ws, [])
    assert unknown.to_text().endswith(
        "ETA: shown once a run with this model, batch size and cutoff has timed a few steps")
    past = RunInfo("earlier", ws.runs / "earlier", "completed", 50, 50, 1.0, 0.0, config.model_name_or_path,
                   config=config.replace(learning_rate=0.5), pace=0.5)
    timed = preflight_report(config, ws, [past])
    assert timed.to_text().endswith("ETA: about 2.5 min at the pace of run earlier (0.50 s/step on this machine)")
    assert timed.to_text("zh").endswith("预计用时：约 2.5 分钟（按运行 earlier 在本机的速度，每步 0.50 秒）")
    assert english_words(timed.to_text("zh"), allowed=f"{demo_model_dir} earlier {ws.runs}") == []


# --- the preset's dry run, as a user runs it ----------------------------------------------------
@pytest.mark.skipif(not HUANHUAN.is_file(), reason="needs ../shared/data/huanhuan.json")
def test_index_preset_dry_run_downloads_nothing_and_reports_the_tutorial_numbers(workspace, ws):
    report = dry_run(load_yaml(PRESET).replace(data_files=[str(HUANHUAN)]), ws)
    assert english_words(report.to_text("zh"), allowed=f"IndexTeam/Index-1.9B-Chat {ws.runs}") == []
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
    # 12 bytes a trainable parameter (float32 LoRA weights and two AdamW moments); 702 steps save 8 times
    # (every 100 and the last), save_total_limit 3 keeps 4 for a moment, the adapter is 46.3 MB
    assert "Disk: about 138.9 MB a checkpoint, up to 4 at once, and the adapter 46.3 MB: about 602.1 MB in all" in out
    assert not (workspace / "models").exists()  # nothing was downloaded or built
