"""The reference workload on a GPU: tutorial recipe vs the studio's, Index-1.9B's exact shape, bf16.

    .venv/bin/python bench/gpu_check.py --prepare   # here: encode the real data into bench/out/gpu/
    bash bench/gpu_check.sh [--steps 30]            # on the GPU machine (see bench/README.md)
    bash bench/gpu_check.sh --smoke                 # here, on a CPU: a tiny shape, 3 steps, same code

Both recipes run one after the other in this one process on a random-init LlamaForCausalLM with
Index-1.9B-Chat's shape (36 layers, hidden 2048, vocab 65029), in bfloat16, built on the GPU, with
the preset's LoRA, over the real Zhen Huan lengths (prepared here: the GPU machine has no `datasets`
and no ../shared). Prints one table: real tokens/s, model FLOPs utilisation (useful FLOPs: real tokens,
no recompute, over the GPU's dense bf16 peak), hardware FLOPs utilisation (everything computed,
padding and recompute included) and peak GPU memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
OUT = HERE / "out" / "gpu"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks


def prepare() -> None:
    import train_speed
    import workload

    OUT.mkdir(parents=True, exist_ok=True)
    train_speed.prepare(1, OUT / "examples.json")
    shutil.copytree(workload.TOKENIZER, OUT / "tokenizer", dirs_exist_ok=True)
    print(f"wrote {OUT}/examples.json and {OUT}/tokenizer/")


def run_recipe(recipe: str, spec: dict, shape: dict, steps: int, device: str) -> dict:
    import tempfile

    import torch

    import train_recipes
    import workload

    tok = workload.tokenizer(OUT / "tokenizer")
    tok.pad_token = tok.convert_ids_to_tokens(spec["pad_id"])
    rows = spec["tutorial" if recipe == "tutorial" else "studio"]
    data = [{**row, "idx": n} for n, row in enumerate(rows)]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = workload.build_model(shape, seed=0, dtype=dtype, device=device)
    record = {"step_end": [], "loss": [], "callback_seconds": 0.0, "checkpointing_on": True,
              "checkpointing": "gradient checkpointing on (the tutorial sets it)"}
    with tempfile.TemporaryDirectory() as out:
        extra = [train_recipes.step_callback(record)]
        if recipe == "tutorial":
            trainer, recorder = train_recipes.tutorial_trainer(model, tok, data, steps, out, extra)
        else:
            trainer, recorder = train_recipes.studio_trainer(model, tok, data, steps, out, extra, record, True)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # one table at the end, not a log dict per step
        record["started"] = time.perf_counter()
        trainer.train()
        if device == "cuda":
            torch.cuda.synchronize()
    record["batches"] = recorder.batches
    record["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    del trainer, model, recorder
    gc.collect()
    return record


def summary(record: dict, shape: dict, warmup: int, packed: bool, checkpointing: bool, peak: float) -> dict:
    import workload

    micro = record["batches"][warmup * 4:]
    lengths = [[n for _, n in batch] for batch in micro]
    seconds = record["step_end"][-1] - record["step_end"][warmup - 1]
    done = workload.flops(shape, lengths, packed, checkpointing, lora_r=8)
    useful = workload.flops(shape, lengths, True, False, lora_r=8)["flops"]
    return {"tok_s": done["real"] / seconds, "padding": done["padding"], "mfu": useful / seconds / peak,
            "hfu": done["flops"] / seconds / peak, "seconds": seconds, "loss": record["loss"][-1],
            "ids": [[i for i, _ in batch] for batch in micro]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="encode the data here, for the GPU run")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape on any device, to test this script")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per recipe")
    parser.add_argument("--warmup", type=int, default=3)
    opts = parser.parse_args()
    if opts.prepare:
        return prepare()
    import torch

    import workload

    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = json.loads((OUT / "examples.json").read_text(encoding="utf-8"))
    shape = workload.index_shape(1)
    if opts.smoke:
        shape = {**workload.index_shape(16), "vocab_size": 8192}
        opts.steps, opts.warmup = 1, 2
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
    import transformers, peft  # noqa: E401 - versions for the record

    print(f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; shape {shape}", flush=True)
    results = {}
    for recipe in ("tutorial", "studio"):
        record = run_recipe(recipe, spec, shape, opts.warmup + opts.steps, device)
        packed = recipe == "studio" and record.get("collator") == "DataCollatorWithFlattening"
        ckpt = record["checkpointing_on"]
        results[recipe] = {**summary(record, shape, opts.warmup, packed, ckpt, peak), "peak_gb": record["peak_gb"],
                           "how": f"{'packed' if packed else 'padded'}, {record['checkpointing']}"}
        print(f"{recipe}: {results[recipe]['seconds']:.1f} s for {opts.steps} steps", flush=True)
    t, s = results["tutorial"], results["studio"]
    print(f"\n{opts.steps} timed optimizer steps of 16 examples each (after {opts.warmup} warm-up), same examples "
          f"in both: {'yes' if t['ids'] == s['ids'] else 'NO'}; MFU peak {peak / 1e12:.0f} TFLOP/s")
    print(f"{'recipe':10} {'real tok/s':>11} {'padding':>8} {'MFU':>6} {'HFU':>6} {'peak GPU mem':>13} "
          f"{'last loss':>9}  how")
    for recipe, r in results.items():
        print(f"{recipe:10} {r['tok_s']:>11.0f} {100 * r['padding']:>7.1f}% {100 * r['mfu']:>5.1f}% "
              f"{100 * r['hfu']:>5.1f}% {r['peak_gb']:>10.2f} GB {r['loss']:>9.4f}  {r['how']}")
    print(f"total {time.time() - started:.0f} s")
    print(f"speedup {s['tok_s'] / t['tok_s']:.2f}")


if __name__ == "__main__":
    main()
