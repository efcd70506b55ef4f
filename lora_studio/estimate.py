"""Pre-flight estimates: trainable parameters, optimizer steps and peak memory, before any training.

The CLI's `train --dry-run`, the studio's pre-flight panel and `gradient_checkpointing: auto` read
these numbers. They come from the run itself: the model is constructed from its config on the meta
device (no weights, no download) and handed to `recipe.assemble_run`, as a real run's model is, and
the step count reproduces the installed Trainer's arithmetic. The memory estimate is the formula
documented in catalog.yaml; with quantisation (QLoRA) the weights' part is quantization.py's. Every
line is a catalogue message (`Preflight.lines()`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .config import RunConfig
from .disk import DiskNeed, disk_need, tokenizer_bytes
from .errors import ModelError, first_line
from .i18n import DEFAULT_LANGUAGE, Msg, msg
from .quantization import estimate_note, frozen_weight_bytes
from .runtime import World, dtype_name, torch_dtype
from .workspace import Workspace

GB = 1e9
RUNTIME_BYTES = 0.5 * GB        # CUDA context and allocator workspace
LOGIT_BYTES_PER_ENTRY = 12      # logits, their fp32 copy, log-softmax and its gradient
MEMORY_HEADROOM = 0.9           # 'auto' checkpointing keeps 10% of the device free
INDEX_1_9B_ID = "IndexTeam/Index-1.9B-Chat"


@dataclass
class Preflight:
    trainable_params: int
    total_params: int
    trainable_percent: float
    examples: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    memory_gb: dict                       # weights, lora+optimizer, activations, runtime, total
    gradient_checkpointing: bool          # what the run will use (the setting, or auto's choice)
    notes: list[Msg] = field(default_factory=list)
    model: str | Msg = ""
    dtype: str = "bfloat16"
    eta: Msg | None = None                # how long the run will take, from a past run (preflight_report)
    disk: DiskNeed | None = None          # what the checkpoints and the adapter take, and what is free (dry_run)

    def lines(self) -> list[Msg]:
        memory = self.memory_gb
        lines = [
            msg("estimate.model", model=self.model) if self.model else None,
            msg("estimate.trainable", trainable=self.trainable_params, total=self.total_params,
                percent=self.trainable_percent),
            msg("estimate.examples", count=self.examples) if self.examples is not None else None,
            msg("estimate.steps_per_epoch", count=self.steps_per_epoch) if self.steps_per_epoch is not None else None,
            msg("estimate.total_steps", count=self.total_steps) if self.total_steps is not None else None,
            msg("estimate.memory", dtype=self.dtype, total=memory["total"],
                checkpointing=msg("training.state_on" if self.gradient_checkpointing else "training.state_off"),
                weights=memory["weights"], lora=memory["lora+optimizer"], activations=memory["activations"],
                runtime=memory["runtime"]),
            *self._disk_lines(),
            *(msg("estimate.note", text=note) for note in self.notes),
            self.eta,
        ]
        return [line for line in lines if line is not None]

    def _disk_lines(self) -> list[Msg]:
        from .hub_local import format_bytes

        disk = self.disk
        if disk is None or not disk.kept:
            return []
        free = format_bytes(disk.free) if disk.free is not None else "?"
        lines = [msg("estimate.disk", checkpoint=format_bytes(disk.checkpoint), kept=disk.kept,
                     adapter=format_bytes(disk.adapter), total=format_bytes(disk.total), free=free, where=disk.where)]
        if disk.short:
            lines.append(msg("estimate.disk_short", total=format_bytes(disk.total), free=free, where=disk.where))
        return lines

    def to_text(self, lang: str = DEFAULT_LANGUAGE) -> str:
        return "\n".join(line.render(lang) for line in self.lines())


# --- models on the meta device -------------------------------------------------------------------
def _transformers_config(model_config):
    """A transformers config object from a config.json dict (Index becomes Llama) or a config."""
    from .index_model import is_index_config, llama_config_from_index

    if not isinstance(model_config, Mapping) and not is_index_config(model_config.to_dict()):
        return model_config  # a loaded model's own config: it may be a class only its own code knows
    model_config = dict(model_config) if isinstance(model_config, Mapping) else model_config.to_dict()
    if is_index_config(model_config):
        return llama_config_from_index(model_config)
    from transformers import AutoConfig

    values = {k: v for k, v in model_config.items() if k not in ("auto_map", "transformers_version")}
    try:
        return AutoConfig.for_model(**values)
    except (ValueError, KeyError, TypeError) as exc:
        detail = first_line(exc)  # transformers lists every type it knows after its first sentence
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ModelError(msg("estimate.cannot_build", model_type=repr(model_config.get("model_type")),
                             detail=detail), "config.json", msg("estimate.cannot_build_fix")) from None


def meta_model(model_config, dtype: str = "float32"):
    """The model `model_config` describes, on the meta device: shapes only, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _transformers_config(model_config)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))


def count_trainable(model_config, run_config: RunConfig) -> tuple[int, int]:
    """(trainable, total) parameters of the LoRA-wrapped model, built on the meta device."""
    from peft import get_peft_model

    from .recipe import lora_config

    model = meta_model(model_config)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora_config(run_config, model)).get_nb_trainable_parameters()


# --- steps ---------------------------------------------------------------------------------------
def optimizer_steps(num_examples: int, run_config: RunConfig, world_size: int = 1) -> tuple[int, int]:
    """(steps_per_epoch, total_steps) exactly as transformers 5.24's Trainer counts them.

    The dataloader keeps the last short batch (drop_last off) and accelerate gives every rank the
    same number of batches. Trainer.set_initial_training_values then counts a trailing partial
    accumulation as an optimizer step (ceil), and max_steps = ceil(epochs x steps per epoch).
    transformers 4.x used floor here, which is why the tutorial's 933 batches a epoch gave 233 steps.
    """
    if num_examples <= 0:
        return 0, 0
    batches = math.ceil(num_examples / run_config.per_device_train_batch_size)
    batches_per_rank = math.ceil(batches / max(1, world_size))
    accumulation = run_config.gradient_accumulation_steps
    per_epoch = max(math.ceil(batches_per_rank / accumulation), 1)
    if run_config.max_steps > 0:
        return per_epoch, run_config.max_steps
    return per_epoch, math.ceil(run_config.num_train_epochs * per_epoch)


# --- memory --------------------------------------------------------------------------------------
def memory_estimate(model_config, run_config: RunConfig, dtype_bytes: int = 2,
                    gradient_checkpointing: bool = True, params: tuple[int, int] | None = None) -> dict:
    """Peak training memory in GB (1e9 bytes) by part, worst case: every example fills cutoff_len.

    `params` is (trainable, total) when already counted. The formula is catalog.yaml's.
    """
    config = _transformers_config(model_config)
    trainable, total = params if params is not None else count_trainable(model_config, run_config)
    tokens = run_config.per_device_train_batch_size * run_config.cutoff_len
    hidden, layers = config.hidden_size, config.num_hidden_layers
    one_layer = dtype_bytes * tokens * (12 * hidden + 4 * config.intermediate_size)
    activations = dtype_bytes * layers * tokens * hidden + one_layer  # checkpointed inputs + a recompute
    if not gradient_checkpointing:
        activations += layers * one_layer
    activations += LOGIT_BYTES_PER_ENTRY * tokens * config.vocab_size
    parts = {
        "weights": frozen_weight_bytes(config, run_config, total - trainable, dtype_bytes) / GB,  # QLoRA: less
        "lora+optimizer": 16 * trainable / GB,  # fp32 weights, gradients and two AdamW moments
        "activations": activations / GB,
        "runtime": RUNTIME_BYTES / GB,
    }
    parts["total"] = sum(parts.values())
    return parts


def device_memory() -> tuple[float, Msg]:
    """(GB, what) of the memory training will run in: the first GPU, else the machine's RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GB, msg("training.device_gpu", name=props.name)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, msg("training.device_ram")
    except (ValueError, OSError, AttributeError):
        return float("inf"), msg("training.device_ram")


# --- the whole pre-flight ------------------------------------------------------------------------
def preflight(run_config: RunConfig, model_config_dict: Mapping, num_examples: int | None) -> Preflight:
    """The estimate for a run of `run_config` on `num_examples` examples, from the run's own recipe."""
    from .recipe import assemble_run

    dtype = dtype_name(run_config.dtype)
    dtype_bytes = 4 if dtype == "float32" else 2
    recipe = assemble_run(run_config, meta_model(model_config_dict, dtype), None, None, Path("dry-run"),
                          emit=lambda event: None, should_stop=lambda: False)
    params = recipe.model.get_nb_trainable_parameters()
    checkpointing = recipe.gradient_checkpointing
    memory = memory_estimate(model_config_dict, run_config, dtype_bytes, checkpointing, params)
    notes = [recipe.checkpointing_reason] if run_config.gradient_checkpointing == "auto" else []
    quantized = estimate_note(_transformers_config(model_config_dict), run_config, params[1] - params[0])
    notes += [quantized] if quantized is not None else []
    if dtype == "float32":
        bf16 = memory_estimate(model_config_dict, run_config, 2, checkpointing, params)["total"]
        notes.append(msg("estimate.float32_here", gb=bf16))
    steps = (None, None)
    if num_examples is not None:
        steps = optimizer_steps(num_examples, run_config, World.from_env().world_size)
        notes += _partial_accumulation_note(num_examples, run_config, steps)
    trainable, total = params
    return Preflight(trainable, total, 100 * trainable / total, num_examples, steps[0], steps[1], memory,
                     checkpointing, notes, dtype=dtype)


def _partial_accumulation_note(num_examples: int, run_config: RunConfig, steps: tuple[int, int]) -> list[Msg]:
    """Say so where transformers 4.x (the tutorial's) would have counted fewer steps."""
    batches = math.ceil(num_examples / run_config.per_device_train_batch_size)
    accumulation = run_config.gradient_accumulation_steps
    if batches % accumulation == 0 or run_config.max_steps > 0:
        return []
    legacy = math.ceil(run_config.num_train_epochs * max(batches // accumulation, 1))
    return [msg("estimate.partial_accumulation", batches=batches, partial=batches % accumulation,
                per_epoch=steps[0], total=steps[1], legacy=legacy)]


def dry_run(run_config: RunConfig, workspace: Workspace) -> Preflight:
    """Everything up to the first step, without downloading: the CLI's `train --dry-run`."""
    from .data import select_records
    from .quantization import check_available
    from .trackers import check_installed

    check_installed(run_config)   # what a start would refuse, refused here first
    check_available(run_config)
    model_config, where = model_config_for(run_config, workspace)
    report = preflight(run_config, model_config, len(select_records(run_config).train))
    report.model = where
    model_path = Path(where) if isinstance(where, str) else None  # a Msg: not downloaded, no tokenizer files
    report.disk = disk_need(report.trainable_params, report.total_steps or 0, run_config.save_steps,
                            run_config.save_total_limit, tokenizer_bytes(model_path), workspace.runs)
    return report


def preflight_report(run_config: RunConfig, workspace: Workspace, runs: list) -> Preflight:
    """The dry run plus how long the run will take, timed by the newest of `runs` trained like it."""
    from .runs import measured_pace

    report = dry_run(run_config, workspace)
    timed = measured_pace(run_config, runs)
    if timed and report.total_steps:
        pace, run = timed
        report.eta = msg("estimate.eta", eta=duration(pace * report.total_steps), run=run, pace=pace)
    else:
        report.eta = msg("estimate.eta_unknown")
    return report


def duration(seconds: float) -> Msg:
    return msg("estimate.minutes", value=seconds / 60) if seconds >= 60 else msg("estimate.seconds", value=seconds)


def model_config_for(run_config: RunConfig, workspace: Workspace) -> tuple[Mapping, str | Msg]:
    """The model's config.json and where it is; Index-1.9B-Chat's built-in one if not downloaded."""
    from . import models
    from .index_model import INDEX_1_9B_CONFIG

    name = run_config.model_name_or_path
    try:
        path = models.resolve_model_path(name, workspace)
    except ModelError:
        if models.hub_folder_name(name).lower() != models.hub_folder_name(INDEX_1_9B_ID).lower():
            raise
        return INDEX_1_9B_CONFIG, msg("estimate.not_downloaded", name=name)
    return models.read_model_config(path), str(path)
