"""The run assembler: the tutorial's LoRA settings reach the adapter, command.sh reproduces a run, and the
dry run reports what the run is built with."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lora_studio.config import fields_in_group
from lora_studio.estimate import dry_run
from lora_studio.events import Log, Progress, read_events
from lora_studio.presets import load_preset
from lora_studio.training import TrainingJob

from .test_training import palace_config, run_to_end

TUTORIAL_PRESET = "index-1.9b-chat-huanhuan"
SEVEN_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def tutorial_run(demo_model_dir, tmp_path_factory):
    """A few steps on the demo model with the tutorial preset's LoRA settings, every step logged."""
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("tutorial-workspace"))
    preset = load_preset(TUTORIAL_PRESET, ws)
    lora = {name: getattr(preset, name) for name in fields_in_group("lora")}
    job = TrainingJob(palace_config(demo_model_dir, run_name="tutorial-lora", max_steps=4, logging_steps=1,
                                    **lora), ws)
    end = run_to_end(job)
    assert end.status == "completed", end
    return job


def logged_losses(run_dir) -> list[float]:
    return [e.loss for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress) and e.loss is not None]


def test_the_tutorial_presets_lora_settings_reach_the_adapter(tutorial_run):
    saved = json.loads((tutorial_run.run_dir / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert (saved["r"], saved["lora_alpha"], saved["lora_dropout"]) == (8, 32, 0.1)
    assert set(saved["target_modules"]) == SEVEN_MODULES and len(saved["target_modules"]) == 7
    assert saved["use_rslora"] is False and saved["use_dora"] is False


def test_the_dry_run_counts_what_the_run_trains(tutorial_run):
    report = dry_run(tutorial_run.config, tutorial_run.workspace)
    logged = [e.message for e in read_events(tutorial_run.run_dir / "events.jsonl") if isinstance(e, Log)]
    assert (f"LoRA: {report.trainable_params:,} trainable parameters of {report.total_params:,} "
            f"({report.trainable_percent:.2f}%)") in logged
    assert report.total_steps == 4
    assert "gradient_checkpointing auto: off (about " in "\n".join(logged)  # the run says why, as the dry run does


def test_command_sh_reproduces_the_run_from_anywhere(tutorial_run, tmp_path):
    run_dir, ws = tutorial_run.run_dir, tutorial_run.workspace
    env = {key: value for key, value in os.environ.items() if key != "LORA_STUDIO_HOME"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PATH="/usr/bin:/bin")
    done = subprocess.run(["sh", str(run_dir / "command.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    again = ws.runs / "tutorial-lora-2"  # a new folder in the same workspace; the original is untouched
    assert sorted(p.name for p in ws.runs.iterdir()) == ["tutorial-lora", "tutorial-lora-2"]
    original, reproduced = logged_losses(run_dir), logged_losses(again)
    assert len(original) == len(reproduced) == 4
    assert reproduced == pytest.approx(original, abs=1e-4)
    assert original[-1] != pytest.approx(original[0], abs=1e-3)  # it trained, so equal losses mean something


def test_assemble_run_builds_what_the_settings_say(tmp_path):
    from lora_studio.config import RunConfig
    from lora_studio.recipe import assemble_run
    from lora_studio.trainer_setup import EncodedData

    from .test_padding_free import pad_tokenizer, tiny_llama

    config = RunConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8, gradient_checkpointing=True,
                       save_steps=7, learning_rate=2e-3, padding_free=True)
    seen, extra = [], object()
    recipe = assemble_run(config, tiny_llama(), pad_tokenizer(), EncodedData(train=[], eval=[]), tmp_path,
                          seen.append, lambda: False, extra_callbacks=[extra])
    assert recipe.gradient_checkpointing and recipe.checkpointing_reason.render("en") == \
        "gradient_checkpointing: on (as set)"
    assert recipe.arguments.activation_checkpointing and recipe.arguments.learning_rate == 2e-3
    assert recipe.arguments.eval_strategy == "steps" and recipe.arguments.eval_steps == 7
    assert sorted(recipe.lora_config.target_modules) == ["q_proj", "v_proj"] and recipe.lora_config.r == 4
    assert type(recipe.collator.inner).__name__ == "DataCollatorWithFlattening"
    assert recipe.callbacks[0] is extra and type(recipe.callbacks[-1]).__name__ == "EventCallback"
    assert [e.text.key for e in seen] == ["training.checkpointing_set", "training.lora_params"]
    assert recipe.model.get_nb_trainable_parameters()[0] == 2 * 4 * (64 + 64) + 2 * 4 * (64 + 32)
