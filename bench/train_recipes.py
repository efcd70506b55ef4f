"""One benchmark run of one training recipe, in its own process (train_speed.py starts one per round).

    python bench/train_recipes.py RECIPE DATA.json STEPS   ->  one JSON line on stdout

RECIPE is `tutorial` (the tutorial's Trainer set-up as written, on purpose not the studio's), `studio`
(`lora_studio.recipe.assemble_run`, exactly as TrainingJob calls it: LoRA config, gradient-checkpointing
decision, collator, TrainingArguments, event callback) or `bare` (that recipe without its progress
callback, event log or token counter). Each records,
per optimizer step, the wall time, the loss and which examples (and how many tokens) it batched.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


class Recorder:
    """Outer collator: remembers each micro-batch's example indices and lengths, then delegates."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, features):
        self.batches.append([(f["idx"], len(f["input_ids"])) for f in features])
        return self.inner([{k: v for k, v in f.items() if k != "idx"} for f in features])


def step_callback(record: dict):
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record["step_end"].append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record["loss"].append(float(logs["loss"]))

    return StepTimes()


def timed(callback, record: dict):
    """Accumulate the wall time spent inside the callback's hooks (emitting events included)."""
    for name in ("on_train_begin", "on_step_end", "on_log", "on_step_begin", "on_substep_end"):
        method = getattr(callback, name)

        def wrapper(*args, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                record["callback_seconds"] += time.perf_counter() - started

        setattr(callback, name, wrapper)
    return callback


def tutorial_trainer(model, tok, data, steps: int, out: str, extra: list):
    """The tutorial's set-up: LoraConfig, enable_input_require_grads, TrainingArguments, Seq2Seq padding."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=8, lora_alpha=32,
                      lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
    model.enable_input_require_grads()
    model = get_peft_model(model, lora)
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, gradient_accumulation_steps=4,
                             logging_steps=1, num_train_epochs=3, save_steps=100, learning_rate=1e-4,
                             save_on_each_node=True, activation_checkpointing=True,  # its gradient_checkpointing
                             # not in the tutorial: a CPU, a fixed number of steps, no console noise
                             use_cpu=not torch.cuda.is_available(), max_steps=steps, save_strategy="no", report_to=[],
                             disable_tqdm=True, remove_unused_columns=False)
    collator = Recorder(DataCollatorForSeq2Seq(tokenizer=tok, padding=True))
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=extra), collator


def studio_trainer(model, tok, data, steps: int, out: str, extra: list, record: dict, with_events: bool):
    """What TrainingJob builds for the preset: `recipe.assemble_run` and its `trainer()`, as a run calls them.

    `bare` takes the same recipe without its event callback (ours is the last one) and without the
    token-counting wrapper around the collator, to price them."""
    import workload
    from lora_studio.events import EventLog
    from lora_studio.recipe import assemble_run
    from lora_studio.trainer_setup import EncodedData

    config = workload.preset_config(gradient_checkpointing="auto", max_steps=steps, logging_steps=1,
                                    save_steps=10_000)
    events = EventLog(Path(out) / "events.jsonl")
    recipe = assemble_run(config, model, tok, EncodedData(train=data), Path(out), events.emit, lambda: False,
                          extra_callbacks=extra)
    record["checkpointing_on"] = recipe.gradient_checkpointing
    record["checkpointing"] = recipe.checkpointing_reason.render("en")
    record["collator"] = type(recipe.collator.inner).__name__
    if with_events:
        timed(recipe.callbacks[-1], record)
    else:
        recipe.callbacks = recipe.callbacks[:-1]
    recorder = Recorder(recipe.collator if with_events else recipe.collator.inner)
    return recipe.trainer(EncodedData(train=data), collator=recorder), recorder


def main(recipe: str, data_path: str, steps: int) -> dict:
    import torch
    from datasets import Dataset

    import workload

    torch.set_num_threads(1)
    spec = json.loads(Path(data_path).read_text(encoding="utf-8"))
    rows = spec["tutorial" if recipe == "tutorial" else "studio"]
    data = Dataset.from_list([{**row, "idx": n} for n, row in enumerate(rows)])
    tok = workload.tokenizer()
    tok.pad_token = tok.convert_ids_to_tokens(spec["pad_id"])  # pad id after renumbering (masked anyway)
    model = workload.build_model(spec["shape"], seed=0)
    record = {"recipe": recipe, "step_end": [], "loss": [], "callback_seconds": 0.0}
    with tempfile.TemporaryDirectory() as out:
        extra = [step_callback(record)]
        if recipe == "tutorial":
            trainer, recorder = tutorial_trainer(model, tok, data, steps, out, extra)
            record.update(checkpointing_on=True, checkpointing="gradient checkpointing on (the tutorial sets it)")
        else:
            trainer, recorder = studio_trainer(model, tok, data, steps, out, extra, record, recipe == "studio")
        record["started"] = time.perf_counter()
        trainer.train()
        record["ended"] = time.perf_counter()
    record["batches"] = recorder.batches
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
