"""The run assembler: everything a LoRA run hands to transformers' `Trainer`, built in one place.

    recipe = assemble_run(config, model, tokenizer, data, output_dir, emit, should_stop)
    trainer = recipe.trainer(data)

`assemble_run` wraps the model with the run's `peft.LoraConfig`, decides gradient checkpointing (and
says why), picks the collator (padding-free where the model keeps packed examples apart), builds the
`TrainingArguments` and the callbacks. `TrainingJob`, the dry run (on a model built on the meta
device) and the benchmark's studio recipes all call it, so what a dry run reports and what a
benchmark times is what a run trains with.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import RunConfig, Setting
from .errors import ConfigError
from .events import Log
from .i18n import Msg, msg
from .runtime import World
from .quantization import prepare as prepare_quantized
from .trackers import arguments as tracker_arguments, link_callback, place_logs, report_to
from .trainer_setup import CountingCollator, make_early_stopping_callback, make_event_callback


@dataclass
class RunRecipe:
    lora_config: Any              # peft.LoraConfig
    gradient_checkpointing: bool
    checkpointing_reason: Msg     # a whole log line: the decision and why
    model: Any                    # the peft-wrapped model
    collator: CountingCollator    # `.inner` is the transformers collator, without the token counter
    arguments: Any                # transformers.TrainingArguments
    callbacks: list               # the caller's extra callbacks, then ours last
    tokenizer: Any = None

    def trainer(self, data, collator=None):
        """The `Trainer` for `data` (`.train`, `.eval`); `collator` replaces ours (the benchmark records batches)."""
        from transformers.trainer_callback import PrinterCallback

        from .checkpoints import crash_safe_trainer_class

        # checkpoints appear only when whole: a crash mid-save leaves the previous one to resume from
        trainer = crash_safe_trainer_class()(
            model=self.model, args=self.arguments, train_dataset=data.train, eval_dataset=data.eval,
            data_collator=collator or self.collator, processing_class=self.tokenizer, callbacks=self.callbacks)
        trainer.remove_callback(PrinterCallback)  # our Log events already carry every logged value
        place_logs(trainer)  # TensorBoard's event files go into the run folder (trackers.py)
        return trainer


def assemble_run(config: RunConfig, model, tokenizer, data, output_dir: Path, emit: Callable,
                 should_stop: Callable[[], bool], extra_callbacks: Sequence = ()) -> RunRecipe:
    """Wrap `model` for LoRA and build the rest of the run. `data` is EncodedData, or None for a dry run."""
    import torch
    from peft import get_peft_model

    has_eval = data.eval is not None if data is not None else config.val_size > 0
    check_early_stopping(config, has_eval)
    model.config.use_cache = False  # a cache in train() disables the packed-sequence mask (NOTES.md)
    dtype_bytes = next(model.parameters()).element_size()
    model = prepare_quantized(model, config, lambda text: emit(Log(text)))  # QLoRA only: peft's k-bit preparation
    lora = lora_config(config, model)
    # LoRA's initial weights come from the run's seed, so command.sh reproduces the run; the global
    # generators are left as they were (a dry run in the studio must not reseed a run training there).
    on_gpu = model.device.type == "cuda"  # only then are the GPU generators in play (and CUDA started)
    with torch.random.fork_rng(devices=None if on_gpu else []), warnings.catch_warnings():
        torch.manual_seed(config.seed)
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API deprecated in 5.x
        model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    # decided on the loaded model's own config and counts: a model with its own code has no class here
    checkpointing, reason = checkpointing_decision(config, model.config, dtype_bytes, (trainable, total))
    emit(Log(reason))
    emit(Log(msg("training.lora_params", trainable=trainable, total=total, percent=100 * trainable / total)))
    collator = make_collator(config, model, tokenizer, lambda text: emit(Log(text)))
    arguments = training_arguments(config, Path(output_dir), checkpointing, has_eval)
    stopping = []
    if config.early_stopping_patience:
        stopping.append(make_early_stopping_callback(config.early_stopping_patience, emit))
        emit(Log(msg("training.early_stopping_on", patience=config.early_stopping_patience,
                     every=config.save_steps)))
    # ours runs last, so it sees a stop that any other callback asked for on this step
    links = [link_callback(config, emit)] if report_to(config) else []  # the tracker's run, shown in the studio
    callbacks = [*extra_callbacks, *stopping, *links, make_event_callback(emit, collator, should_stop)]
    return RunRecipe(lora, checkpointing, reason, model, collator, arguments, callbacks, tokenizer)


def check_early_stopping(config: RunConfig, has_eval: bool = True) -> None:
    """ConfigError when early stopping is on with no validation loss to watch (`has_eval`: the split has records)."""
    if config.early_stopping_patience <= 0:
        return
    if config.val_size <= 0:
        raise ConfigError(msg("training.early_stopping_needs_validation"), Setting.early_stopping_patience,
                          msg("training.early_stopping_needs_validation_fix"))
    if not has_eval:
        raise ConfigError(msg("training.early_stopping_no_validation", val_size=config.val_size), Setting.val_size,
                          msg("training.early_stopping_no_validation_fix"))


# --- LoRA ----------------------------------------------------------------------------------------
def linear_module_names(model) -> list[str]:
    """Leaf names of every linear layer except the output head (what 'all-linear' means)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head}
    return sorted(names)


def lora_config(config: RunConfig, model):
    """The one `peft.LoraConfig` for `config` on `model`, shared by training and estimates."""
    from peft import LoraConfig

    available = linear_module_names(model)
    targets = config.target_modules
    if targets == "all-linear":
        targets = available
    else:
        unknown = [name for name in targets if name not in available]
        if unknown:
            raise ConfigError(msg("training.unknown_modules", names=", ".join(unknown)), Setting.target_modules,
                              msg("training.unknown_modules_fix", available=", ".join(available)))
    return LoraConfig(task_type="CAUSAL_LM", r=config.r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(targets), bias="none",
                      use_rslora=config.use_rslora, use_dora=config.use_dora)


# --- gradient checkpointing ----------------------------------------------------------------------
def checkpointing_decision(config: RunConfig, model_config, dtype_bytes: int,
                           params: tuple[int, int] | None = None) -> tuple[bool, Msg]:
    """(on, why): the setting, or for 'auto' whether the worst-case batch would overflow memory without it.

    `params` is (trainable, total) when already counted (else counted on the meta device).
    """
    from . import estimate

    setting = config.gradient_checkpointing
    if setting != "auto":
        return bool(setting), msg("training.checkpointing_set", state=on_off(bool(setting)))
    without = estimate.memory_estimate(model_config, config, dtype_bytes, gradient_checkpointing=False,
                                       params=params)
    available, where = estimate.device_memory()
    needed = without["total"] > estimate.MEMORY_HEADROOM * available
    why = msg("training.memory_compared", needed=without["total"], available=available, where=where)
    return needed, msg("training.checkpointing_auto", state=on_off(needed), why=why)


def on_off(value: bool) -> Msg:
    return msg("training.state_on" if value else "training.state_off")


# --- batches -------------------------------------------------------------------------------------
def supports_padding_free(model) -> tuple[bool, Msg | None]:
    """Whether packed sequences with position_ids keep attention per example for this model (else why not)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    if not type(base).__module__.startswith("transformers.models."):
        return False, msg("training.own_code", model=name)
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return False, msg("training.no_position_ids", model=name)
    return True, None


def make_collator(config: RunConfig, model, tokenizer, log: Callable[[Msg], None]) -> CountingCollator:
    """Padding-free batches where the model keeps packed examples apart, else padding to the longest.

    Packing computes only real tokens (the Zhen Huan set at batch 4 is about a third padding) and
    changes nothing that is learned: the same examples per step, the same label tokens in the loss.
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if config.padding_free:
        ok, why = supports_padding_free(model)
        if ok:
            # With a KV cache the model skips the packed-sequence mask and examples attend to each
            # other silently (NOTES.md); training and evaluation never need the cache.
            model.config.use_cache = False
            return CountingCollator(DataCollatorWithFlattening(return_position_ids=True))
        log(msg("training.padding_free_off", why=why))
    return CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                                   pad_to_multiple_of=None))


# --- arguments -----------------------------------------------------------------------------------
def training_arguments(config: RunConfig, output_dir: Path, gradient_checkpointing: bool, has_eval: bool):
    import torch
    from transformers import TrainingArguments

    from .runtime import dtype_name

    on_gpu = torch.cuda.is_available()
    dtype = dtype_name(config.dtype)
    distributed = World.from_env().distributed
    # early stopping keeps the adapter of the lowest validation loss: its checkpoint is never rotated
    # away (checkpoints.rotate) and the Trainer loads it back at the end, before adapter/ is saved
    keep_best = config.early_stopping_patience > 0 and has_eval
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        activation_checkpointing=gradient_checkpointing,  # transformers 5's name for it
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps if config.warmup_steps < 1 else int(config.warmup_steps),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit or None,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.save_steps if has_eval else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        seed=config.seed,
        data_seed=config.seed,
        bf16=on_gpu and dtype == "bfloat16",
        fp16=on_gpu and dtype == "float16",
        use_cpu=not on_gpu,
        ddp_backend=("nccl" if on_gpu else "gloo") if distributed else None,
        ddp_find_unused_parameters=False if distributed else None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **tracker_arguments(config, output_dir.parent),  # report_to (trackers.py), the run named after its folder
        save_only_model=False,
    )
