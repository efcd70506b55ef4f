"""The pieces a LoRA run hands to transformers' `Trainer`: datasets, collator, arguments, callback.

Kept apart from `training.py` (which owns the thread and the job's life cycle) so that the benchmark
and the dry run build exactly the same objects as a real run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from .events import Evaluation, Log, Progress


@dataclass
class EncodedData:
    train: Any                # datasets.Dataset with input_ids / labels
    eval: Any | None
    records: int              # records read from the files
    duplicates_removed: int
    truncated: int
    skipped: int              # examples left with no trained token (dropped)


def select_records(config: RunConfig) -> tuple[list, list, int, int]:
    """(train, validation, records read, duplicates removed): the records a run trains on.

    The dry run counts its steps from this too, so it cannot disagree with a real run.
    """
    from . import data

    records = data.load_files(config.data_files, config.data_format)
    total, removed = len(records), 0
    if config.dedupe:
        records, removed = data.dedupe(records)
    if config.max_samples:
        records = records[: config.max_samples]
    train, val = data.split(records, config.val_size, config.seed)
    return train, val, total, removed


def encode_data(config: RunConfig, renderer) -> EncodedData:
    """Read, dedupe, split and tokenise the configured data files."""
    from datasets import Dataset

    train, val, total, removed = select_records(config)
    counts = {"truncated": 0, "skipped": 0}

    def encode(part):
        rows = []
        for record in part:
            example = renderer.encode_example(record.messages, config.cutoff_len)
            counts["truncated"] += example.truncated
            if example.trained_tokens == 0:
                counts["skipped"] += 1
                continue
            rows.append({"input_ids": example.input_ids, "labels": example.labels})
        return Dataset.from_list(rows) if rows else None

    train_ds, eval_ds = encode(train), encode(val) if val else None
    if train_ds is None:
        from .errors import DataError

        raise DataError("no example has any answer token left to train on", ", ".join(config.data_files),
                        "Raise cutoff_len or check that the records have answers.")
    return EncodedData(train_ds, eval_ds, total, removed, counts["truncated"], counts["skipped"])


def supports_padding_free(model) -> tuple[bool, str]:
    """Whether packed sequences with position_ids keep attention per example for this model."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = type(base).__module__
    if not module.startswith("transformers.models."):
        return False, f"{type(base).__name__} runs its own code, which may not separate packed examples"
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return False, f"{type(base).__name__} takes no position_ids"
    return True, ""


class CountingCollator:
    """Wraps a collator and counts the real (non-padding) tokens it has batched."""

    def __init__(self, inner: Callable):
        self.inner = inner
        self.tokens = 0

    def __call__(self, features):
        self.tokens += sum(len(f["input_ids"]) for f in features)
        return self.inner(features)


def make_collator(config: RunConfig, model, tokenizer, log: Callable[[str], None]) -> CountingCollator:
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
        log(f"Padding-free batches are off: {why}; padding each batch instead.")
    return CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                                   pad_to_multiple_of=None))


def training_arguments(config: RunConfig, output_dir: Path, gradient_checkpointing: bool,
                       has_eval: bool):
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    world = _world_size()
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
        seed=config.seed,
        data_seed=config.seed,
        bf16=on_gpu and config.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported(),
        fp16=on_gpu and config.dtype == "float16",
        use_cpu=not on_gpu,
        ddp_backend=("nccl" if on_gpu else "gloo") if world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 else None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        report_to=[],
        save_only_model=False,
    )


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def make_event_callback(emit: Callable, collator: CountingCollator, should_stop: Callable[[], bool]):
    """A TrainerCallback that turns trainer state into Progress/Log events and honours stop()."""
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        def __init__(self):
            self.started = time.time()
            self.first_step = 0
            self.tokens_at_start = 0
            self.learning_rate = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()
            self.first_step = state.global_step
            self.tokens_at_start = collator.tokens
            emit(Log(f"Training: {state.max_steps} optimizer steps"
                     + (f", resuming at step {state.global_step}" if state.global_step else "")))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            shown = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch"}
            if shown:
                emit(Log(f"step {state.global_step}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in shown.items())))
            if "loss" in logs:  # the progress of a logging step waits for its loss
                self.learning_rate = logs.get("learning_rate", self.learning_rate)
                emit(self._progress(state, logs["loss"]))
            if "eval_loss" in logs:
                emit(Evaluation(step=state.global_step, eval_loss=float(logs["eval_loss"])))

        def on_step_end(self, args, state, control, **kwargs):
            # DefaultFlowCallback ran first: should_log says whether on_log follows for this step.
            if not control.should_log:
                emit(self._progress(state, None))
            if should_stop():
                control.should_save = True
                control.should_training_stop = True

        def _progress(self, state, loss) -> Progress:
            elapsed = time.time() - self.started
            done = state.global_step - self.first_step
            eta = (state.max_steps - state.global_step) * elapsed / done if done else None
            tokens = collator.tokens - self.tokens_at_start
            return Progress(step=state.global_step, total_steps=state.max_steps,
                            epoch=round(state.epoch or 0.0, 4), loss=loss,
                            learning_rate=self.learning_rate,
                            tokens_per_second=tokens / elapsed if elapsed > 0 else None,
                            elapsed=elapsed, eta=eta)

    return EventCallback()
