"""One benchmark run of one training recipe, in its own process (train_speed.py starts one per round).

    python bench/train_recipes.py RECIPE DATA.json STEPS      ->  one JSON line on stdout
    python bench/train_recipes.py matmul DATA.json TOKENS HEAD_TOKENS

RECIPE is `tutorial` (the tutorial's Trainer set-up as written, on purpose not the studio's), `studio`
(`lora_studio.recipe.assemble_run`, exactly as TrainingJob calls it: LoRA config, gradient-checkpointing
decision, collator, TrainingArguments, event callback, the loss with logits only where a label is
trained), `full_head` (that recipe with the Trainer's own loss, the LM head at every position: what the
logits-only loss saves) or `bare` (the studio recipe without its progress callback, event log or token
counter), or `profile` (the studio recipe under torch.profiler after its first step: self CPU time
by kind of operator, `op_groups`). Each records, per optimizer step, the wall and CPU time, the time per phase (PhaseClock), the
loss and which examples (and how many tokens) it batched.

After its steps every process times the dense fp32 matmuls of the model's linears at its mean
micro-batch's shapes on its one thread (`matmul_rate`): the limit train_speed.py holds it against,
measured on the machine as that process saw it. `full_head` then also times the two losses side by
side on the same micro-batches (`head_ab`). `matmul` alone runs only that measurement.
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
            record.setdefault("cpu_end", []).append(time.process_time())  # immune to other processes' load

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


PHASES = ("data", "forward", "backward", "optimizer", "callbacks")


class PhaseClock:
    """CPU time (this process's: one thread does all the work) per phase of the training loop, summed; `marks` holds the sums at each optimizer step's end.

    data: fetching and collating a step's micro-batches (Trainer.get_batch_samples); forward: compute_loss
    (the forward and the loss); backward: accelerator.backward; optimizer: gradient clipping, the
    optimizer's step and zero_grad; callbacks: every callback hook (progress events included). Whatever
    the step's CPU time holds besides is the trainer loop's own ("other" in train_speed.py)."""

    def __init__(self):
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.marks = []

    def wrap(self, owner, name: str, phase: str) -> None:
        method = getattr(owner, name)

        def timed_call(*args, _method=method, **kwargs):
            started = time.process_time()
            try:
                return _method(*args, **kwargs)
            finally:
                self.totals[phase] += time.process_time() - started

        setattr(owner, name, timed_call)

    def attach(self, trainer) -> None:
        self.wrap(trainer, "get_batch_samples", "data")
        self.wrap(trainer, "compute_loss", "forward")
        self.wrap(trainer.accelerator, "backward", "backward")
        self.wrap(trainer, "_clip_grad_norm", "optimizer")
        self.wrap(trainer.model, "zero_grad", "optimizer")
        self.wrap(trainer.callback_handler, "call_event", "callbacks")
        clock = self

        from transformers import TrainerCallback

        class OptimizerStep(TrainerCallback):  # the optimizer exists from train() on
            def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
                if optimizer is not None:
                    clock.wrap(optimizer, "step", "optimizer")

            def on_step_end(self, args, state, control, **kwargs):
                clock.marks.append(dict(clock.totals))

        trainer.add_callback(OptimizerStep())


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


def studio_trainer(model, tok, data, steps: int, out: str, extra: list, record: dict, with_events: bool,
                   full_head: bool = False, **changes):
    """What TrainingJob builds for the preset: `recipe.assemble_run` and its `trainer()`, as a run calls them.

    `bare` takes the same recipe without its event callback (ours is the last one) and without the
    token-counting wrapper around the collator, to price them."""
    import workload
    from lora_studio.events import EventLog
    from lora_studio.recipe import assemble_run
    from lora_studio.trainer_setup import EncodedData

    config = workload.preset_config(gradient_checkpointing="auto", max_steps=steps, logging_steps=1,
                                    save_steps=10_000, **changes)  # changes: QLoRA in gpu_check.py
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
    trainer = recipe.trainer(EncodedData(train=data), collator=recorder)
    if full_head:  # the Trainer's own loss: logits at every position
        import types

        from transformers import Trainer

        trainer.compute_loss = types.MethodType(Trainer.compute_loss, trainer)
    return trainer, recorder


# --- the limit: dense matmuls at the model's shapes ------------------------------------------------
def linear_shapes(shape: dict) -> list[tuple[int, int, int]]:
    """(in, out, count per micro-batch) of every frozen linear a step multiplies by, the LM head last."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return [(h, h, 2 * layers), (h, kv, 2 * layers), (h, i, 2 * layers), (i, h, layers),
            (h, shape["vocab_size"], 1)]


def matmul_rate(shape: dict, tokens: int, head_tokens: int, passes: int = 5) -> dict:
    """FLOP/s of fp32 matmuls on this thread at a micro-batch's shapes: for each linear, the forward
    `F.linear(x[tokens x in], W)` and the input gradient `g[tokens x out] @ W`, weighted by how often
    a step does each (the head at `head_tokens` rows: where a label is trained). Median over passes,
    by CPU time and by wall time."""
    import statistics

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    work = []
    for fan_in, fan_out, count in linear_shapes(shape):
        rows = head_tokens if fan_out == shape["vocab_size"] else tokens
        work.append((torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(rows, fan_out), count))
    flops = sum(count * 2 * (2 * x.shape[0] * w.shape[0] * w.shape[1]) for x, w, _, count in work)
    rates = {"cpu": [], "wall": []}
    for n in range(passes + 1):
        cpu = wall = 0.0
        for x, w, g, count in work:
            for _ in range(count):  # as often as a step does it: the same cache traffic
                started, started_cpu = time.perf_counter(), time.process_time()
                F.linear(x, w)
                torch.matmul(g, w)
                cpu += time.process_time() - started_cpu
                wall += time.perf_counter() - started
        if n:  # the first pass warms the allocator and caches
            rates["cpu"].append(flops / cpu)
            rates["wall"].append(flops / wall)
    return {"recipe": "matmul", "tokens": tokens, "head_tokens": head_tokens, "flops": flops,
            "cpu_rate": statistics.median(rates["cpu"]), "wall_rate": statistics.median(rates["wall"]),
            "cpu_rates": rates["cpu"]}


# --- where the time goes, by operator -------------------------------------------------------------
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def op_groups(profiler, shape: dict, lora_r: int = 8) -> dict:
    """Self CPU seconds of the profiled steps by kind: the body's, LoRA's and the head's matmuls (told
    apart by their shapes), attention, dropout's random masks, and every other operator by name."""
    groups: dict[str, float] = {}
    for event in profiler.key_averages(group_by_input_shape=True):
        dims = {d for shape_ in event.input_shapes or () for d in (shape_ or ())}
        if event.key in MATMULS:
            kind = "matmul: LoRA" if lora_r in dims else \
                "matmul: LM head" if shape["vocab_size"] in dims else "matmul: body"
        elif "scaled_dot_product" in event.key or "flash_attention" in event.key:
            kind = "attention (SDPA)"
        elif event.key == "aten::bernoulli_":
            kind = "dropout: random masks"
        else:
            kind = event.key
        groups[kind] = groups.get(kind, 0.0) + event.self_cpu_time_total / 1e6
    return groups


def profiled(trainer, record: dict):
    """A callback that profiles every step after the first (torch.profiler, shapes recorded)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        profiler = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.profiler is None:
                self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
                self.profiler.start()

        def on_train_end(self, args, state, control, **kwargs):
            if self.profiler is not None:
                self.profiler.stop()
                record["ops"] = op_groups(self.profiler, record["shape"])

    trainer.add_callback(Profile())


def head_ab(trainer, collate, batches: list, rows: list[dict], reps: int = 2) -> dict:
    """The LM head only where a label is trained against the full head, in this one process: the same
    micro-batches (a few timed steps'), forward and backward with one loss then the other, the order
    swapped each repetition, the same dropout masks for both. Separate processes differ by more than
    this gain on a shared machine; side by side they see the same machine. CPU seconds and losses."""
    import torch
    from transformers import Trainer

    full, short = Trainer.compute_loss.__get__(trainer), type(trainer).compute_loss.__get__(trainer)
    model = trainer.model
    model.train()
    steps = [batches[i:i + 4] for i in range(4, min(len(batches), 12), 4)]  # after the first step
    spent, losses = {"full": 0.0, "short": 0.0}, {"full": [], "short": []}
    for rep in range(reps):
        for n, step in enumerate(steps):
            inputs = [trainer._prepare_inputs(collate([rows[i] for i, _ in batch])) for batch in step]
            items = trainer._get_num_items_in_batch(inputs, trainer.args.device)
            for k, micro in enumerate(inputs):
                for name in ("full", "short") if rep % 2 == 0 else ("short", "full"):
                    torch.manual_seed(1000 * n + k)  # the same dropout masks for both losses
                    started = time.process_time()
                    loss = (full if name == "full" else short)(model, dict(micro), num_items_in_batch=items)
                    loss.backward()
                    spent[name] += time.process_time() - started
                    if rep == 0:
                        losses[name].append(loss.item())
                    model.zero_grad(set_to_none=True)
    return {"seconds": spent, "losses": losses, "micro_batches": reps * sum(map(len, steps))}


def limit_of(shape: dict, batches: list, rows: list[dict]) -> dict:
    """matmul_rate at the mean micro-batch of the timed steps (after the first optimizer step)."""
    timed = batches[4:] or batches
    tokens = round(sum(n for batch in timed for _, n in batch) / len(timed))
    trained = round(sum(sum(label != -100 for label in rows[i]["labels"][1:]) for batch in timed for i, _ in batch)
                    / len(timed))
    return matmul_rate(shape, tokens, trained, passes=3)


def main(recipe: str, data_path: str, steps: int, head_tokens: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(data_path).read_text(encoding="utf-8"))
    if recipe == "matmul":
        return matmul_rate(spec["shape"], steps, head_tokens)
    from datasets import Dataset

    import workload

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
            trainer, recorder = studio_trainer(model, tok, data, steps, out, extra, record, recipe != "bare",
                                               full_head=recipe == "full_head")
        clock = PhaseClock()
        clock.attach(trainer)
        if recipe == "profile":
            record["shape"] = spec["shape"]
            profiled(trainer, record)
        record["started"], record["cpu_started"] = time.perf_counter(), time.process_time()
        trainer.train()
        record["ended"] = time.perf_counter()
        # the limit, measured in this process just after its steps: the same machine as they saw
        record["limit"] = limit_of(spec["shape"], recorder.batches, rows)
        if recipe == "full_head":
            record["head_ab"] = head_ab(trainer, recorder.inner, recorder.batches, rows)
    record["phases"] = clock.marks
    record["batches"] = recorder.batches
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps(main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))))
