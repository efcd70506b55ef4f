"""Pre-flight estimates: trainable parameters, optimizer steps and peak memory, before any training.

The CLI's `train --dry-run`, the studio's pre-flight panel and `gradient_checkpointing: auto` read
these numbers. They come from the same objects a run builds: the model is constructed from its
config on the meta device (no weights, no download) and wrapped with the `LoraConfig` that training
uses (`lora_config`, one function for both), and the step count reproduces the installed Trainer's
arithmetic. The memory estimate is the formula documented in catalog.yaml.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

from .config import RunConfig
from .errors import ConfigError, ModelError

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
    gradient_checkpointing_needed: bool
    notes: list[str] = field(default_factory=list)
    model: str = ""
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = True   # what the run will use (the setting, or auto's choice)

    def to_text(self) -> str:
        parts = ", ".join(f"{k} {v:.1f} GB" for k, v in self.memory_gb.items() if k != "total")
        lines = [
            f"Model: {self.model}" if self.model else None,
            f"Trainable parameters: {self.trainable_params:,} of {self.total_params:,} "
            f"({self.trainable_percent:.2f}%)",
            f"Training examples: {self.examples:,}" if self.examples is not None else None,
            f"Steps per epoch: {self.steps_per_epoch:,}" if self.steps_per_epoch is not None else None,
            f"Total optimizer steps: {self.total_steps:,}" if self.total_steps is not None else None,
            f"Memory estimate ({self.dtype}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}): {self.memory_gb['total']:.1f} GB "
            f"({parts})",
        ]
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(line for line in lines if line)


# --- LoRA ----------------------------------------------------------------------------------------
def linear_module_names(model) -> list[str]:
    """Leaf names of every linear layer except the output head (what 'all-linear' means)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head}
    return sorted(names)


def lora_config(run_config: RunConfig, model):
    """The one `peft.LoraConfig` for `run_config` on `model`, shared by training and estimates."""
    from peft import LoraConfig

    available = linear_module_names(model)
    targets = run_config.target_modules
    if targets == "all-linear":
        targets = available
    else:
        unknown = [name for name in targets if name not in available]
        if unknown:
            raise ConfigError(f"target_modules names {', '.join(unknown)}, which this model does not have",
                              "target_modules", f"This model's linear layers: {', '.join(available)}.")
    return LoraConfig(task_type="CAUSAL_LM", r=run_config.r, lora_alpha=run_config.lora_alpha,
                      lora_dropout=run_config.lora_dropout, target_modules=list(targets), bias="none",
                      use_rslora=run_config.use_rslora, use_dora=run_config.use_dora)


def _transformers_config(model_config):
    """A transformers config object from a config.json dict (Index becomes Llama) or a config."""
    from .index_model import is_index_config, llama_config_from_index

    if not isinstance(model_config, dict):
        model_config = model_config.to_dict()
    if is_index_config(model_config):
        return llama_config_from_index(model_config)
    from transformers import AutoConfig

    values = {k: v for k, v in model_config.items() if k not in ("auto_map", "transformers_version")}
    try:
        return AutoConfig.for_model(**values)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot build model type {model_config.get('model_type')!r} from its config "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", "config.json",
                         "This architecture needs its own code; estimates are not available for it.") from None


def count_trainable(model_config, run_config: RunConfig) -> tuple[int, int]:
    """(trainable, total) parameters of the LoRA-wrapped model, built on the meta device."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    config = _transformers_config(model_config)
    with torch.device("meta"):  # shapes only: no memory, no initialisation, no weights
        model = AutoModelForCausalLM.from_config(config)
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, lora_config(run_config, model))
    return peft_model.get_nb_trainable_parameters()


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
        "weights": dtype_bytes * (total - trainable) / GB,
        "lora+optimizer": 16 * trainable / GB,  # fp32 weights, gradients and two AdamW moments
        "activations": activations / GB,
        "runtime": RUNTIME_BYTES / GB,
    }
    parts["total"] = sum(parts.values())
    return parts


def device_memory() -> tuple[float, str]:
    """(GB, what) of the memory training will run in: the first GPU, else the machine's RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GB, f"GPU {props.name}"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, "RAM"
    except (ValueError, OSError, AttributeError):
        return float("inf"), "RAM"


def _checkpointing_decision(memory_without: dict) -> tuple[bool, str]:
    available, where = device_memory()
    needed = memory_without["total"] > MEMORY_HEADROOM * available
    return needed, (f"about {memory_without['total']:.1f} GB without it, {available:.1f} GB of {where}")


def needs_gradient_checkpointing(run_config: RunConfig, model) -> tuple[bool, str]:
    """For a loaded model: would the worst-case batch overflow memory without checkpointing?"""
    dtype_bytes = next(model.parameters()).element_size()
    without = memory_estimate(model.config, run_config, dtype_bytes, gradient_checkpointing=False)
    return _checkpointing_decision(without)


# --- the whole pre-flight ------------------------------------------------------------------------
def dtype_name(run_config: RunConfig) -> str:
    """The precision a run will train in on this machine (what models.pick_dtype picks)."""
    if run_config.dtype != "auto":
        return run_config.dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def preflight(run_config: RunConfig, model_config_dict: dict, num_examples: int | None) -> Preflight:
    dtype = dtype_name(run_config)
    dtype_bytes = 4 if dtype == "float32" else 2
    trainable, total = count_trainable(model_config_dict, run_config)
    params = (trainable, total)
    without = memory_estimate(model_config_dict, run_config, dtype_bytes, False, params)
    needed, why = _checkpointing_decision(without)
    setting = run_config.gradient_checkpointing
    checkpointing = needed if setting == "auto" else bool(setting)
    memory = memory_estimate(model_config_dict, run_config, dtype_bytes, checkpointing, params)
    notes = []
    if setting == "auto":
        notes.append(f"gradient_checkpointing auto: {'on' if needed else 'off'} ({why}).")
    if dtype == "float32":
        bf16 = memory_estimate(model_config_dict, run_config, 2, checkpointing, params)["total"]
        notes.append(f"No bf16 GPU here, so float32; on a bf16 GPU this run needs about {bf16:.1f} GB.")
    steps = (None, None)
    if num_examples is not None:
        steps = optimizer_steps(num_examples, run_config, int(os.environ.get("WORLD_SIZE", "1")))
        notes += _partial_accumulation_note(num_examples, run_config, steps)
    return Preflight(trainable, total, 100 * trainable / total, num_examples, steps[0], steps[1], memory,
                     needed, notes, dtype=dtype, gradient_checkpointing=checkpointing)


def _partial_accumulation_note(num_examples: int, run_config: RunConfig, steps: tuple[int, int]) -> list:
    """Say so where transformers 4.x (the tutorial's) would have counted fewer steps."""
    batches = math.ceil(num_examples / run_config.per_device_train_batch_size)
    accumulation = run_config.gradient_accumulation_steps
    if batches % accumulation == 0 or run_config.max_steps > 0:
        return []
    legacy = math.ceil(run_config.num_train_epochs * max(batches // accumulation, 1))
    return [f"{batches:,} batches an epoch end in a partial accumulation of {batches % accumulation}, which "
            f"this transformers counts as an optimizer step ({steps[0]:,} an epoch, {steps[1]:,} in all); "
            f"transformers 4.x, as in the tutorial, dropped it and counted {legacy:,}."]


def dry_run(run_config: RunConfig) -> Preflight:
    """Everything up to the first step, without downloading: the CLI's `train --dry-run`."""
    from .trainer_setup import select_records

    model_config, where = model_config_for(run_config)
    train, _val, _total, _removed = select_records(run_config)
    report = preflight(run_config, model_config, len(train))
    report.model = where
    return report


def model_config_for(run_config: RunConfig) -> tuple[dict, str]:
    """The model's config.json and a description; Index-1.9B-Chat's built-in one if not downloaded."""
    from . import models
    from .index_model import INDEX_1_9B_CONFIG

    name = run_config.model_name_or_path
    try:
        path = models.resolve_model_path(name)
    except ModelError:
        if models.hub_folder_name(name).lower() != models.hub_folder_name(INDEX_1_9B_ID).lower():
            raise
        return dict(INDEX_1_9B_CONFIG), f"{name} (not downloaded: estimated from its config, which LoRA Studio knows)"
    return models.read_model_config(path), str(path)
