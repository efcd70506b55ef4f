"""The data and the callback of a LoRA run: encoded datasets, the token counter, trainer events.

`recipe.assemble_run` puts these together with the LoRA config, collator and arguments; kept apart
from `training.py` (which owns the job's thread and life cycle) so that the benchmark and the dry
run build exactly the same objects as a real run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .config import RunConfig, Setting
from .events import EarlyStopped, Evaluation, Log, Progress
from .i18n import CATALOGUE, Msg, msg


@dataclass
class EncodedData:
    train: Any                # datasets.Dataset with input_ids / labels
    eval: Any | None = None
    records: int = 0          # records read from the files
    duplicates_removed: int = 0
    truncated: int = 0
    skipped: int = 0          # examples left with no trained token (dropped)

    def summary(self, config: RunConfig) -> Msg:
        """The log line that says what the run trains on."""
        return msg("training.data_summary", records=self.records, removed=self.duplicates_removed,
                   train=len(self.train), truncated=self.truncated, cutoff=config.cutoff_len,
                   validation=msg("training.data_validation", count=len(self.eval)) if self.eval is not None else "",
                   skipped=msg("training.data_skipped", count=self.skipped) if self.skipped else "")


def encode_data(config: RunConfig, renderer) -> EncodedData:
    """Tokenise the records `data.select_records` chooses for this run (read, deduped, split)."""
    from datasets import Dataset

    from .data import select_records

    selection = select_records(config)
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

    train_ds, eval_ds = encode(selection.train), encode(selection.val) if selection.val else None
    if train_ds is None:
        from .errors import DataError

        raise DataError(msg("training.no_trainable_examples"), ", ".join(config.data_files),
                        msg("training.no_trainable_examples_fix"))
    return EncodedData(train_ds, eval_ds, selection.total, selection.removed, counts["truncated"],
                       counts["skipped"])


class CountingCollator:
    """Wraps a collator and counts the real (non-padding) tokens it has batched."""

    def __init__(self, inner: Callable):
        self.inner = inner
        self.tokens = 0

    def __call__(self, features):
        self.tokens += sum(len(f["input_ids"]) for f in features)
        return self.inner(features)


def metrics_line(step: int, values: dict) -> Msg:
    """'step 10: loss 1.23, grad_norm 0.5' as a catalogue line; a metric we know is named in the reader's
    language (key training.metric_<name>), any other as the Trainer spells it."""
    def name_of(metric: str) -> Msg | str:
        key = f"training.metric_{metric}"
        return msg(key) if key in CATALOGUE else metric

    items = list(values.items())
    name, value = items[-1]
    line = msg("training.metric", name=name_of(name), value=value)
    for name, value in reversed(items[:-1]):  # nested, so each language joins the list its own way
        line = msg("training.metric_then", name=name_of(name), value=value, rest=line)
    return msg("training.step_log", step=step, metrics=line)


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
            # A resume loads the state's logging/save/eval intervals from the checkpoint; a resume may
            # change them (resume.RESUMABLE_SETTINGS), so they come from the run's arguments again.
            state.compute_steps(args, state.max_steps)
            self.started = time.time()
            self.first_step = state.global_step
            self.tokens_at_start = collator.tokens
            resuming = msg("training.resuming_at", step=state.global_step) if state.global_step else ""
            emit(Log(msg("training.steps_planned", steps=state.max_steps, resuming=resuming)))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            shown = {k: v for k, v in logs.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
            if shown:
                emit(Log(metrics_line(state.global_step, shown)))
            if "loss" in logs:  # the progress of a logging step waits for its loss
                # the Trainer logs it under the setting's own name
                self.learning_rate = logs.get(Setting.learning_rate, self.learning_rate)
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


def make_early_stopping_callback(patience: int, emit: Callable):
    """transformers' EarlyStoppingCallback on the validation loss, saying when it stops the run.

    It runs in `evaluate()`, before the Trainer records a new best, so the state's best is the one to
    beat; on a stop the Trainer saves this step's checkpoint, then loads the best one back
    (load_best_model_at_end, see recipe.training_arguments).
    """
    from transformers import EarlyStoppingCallback

    class EarlyStopping(EarlyStoppingCallback):
        def on_evaluate(self, args, state, control, metrics, **kwargs):
            stopping = control.should_training_stop  # already asked for (stop(), or the last step)
            super().on_evaluate(args, state, control, metrics, **kwargs)
            if control.should_training_stop and not stopping and state.global_step < state.max_steps:
                best_step, best = state.best_global_step or 0, float(state.best_metric)
                emit(EarlyStopped(step=state.global_step, best_step=best_step, best_eval_loss=best))
                emit(Log(msg("training.early_stopped", patience=patience, step=state.global_step,
                             best_step=best_step, loss=best)))

    return EarlyStopping(early_stopping_patience=patience)
