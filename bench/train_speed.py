"""Training throughput: the tutorial's recipe against the studio's default, side by side, one CPU thread.

    .venv/bin/python bench/train_speed.py [--rounds 3] [--steps 5] [--warmup 1] [--scale 4]

A script that prints numbers, not a test. The workload (bench/workload.py): the real Zhen Huan set,
real token lengths (Qwen2 BPE + Index's special tokens), a random-init Llama with Index-1.9B's
proportions divided by --scale, the Index preset's LoRA (r 8, alpha 32, dropout 0.1, all 7 linears),
batch 4 x accumulation 4, random order with seed 42, so both recipes see the same 16 examples in each
optimizer step. Each round runs each recipe in a fresh process (tutorial, studio, bare, interleaved);
the first --warmup optimizer steps of every process are discarded. The last line is `speedup X.XX`:
the studio's useful (real, non-padding) tokens per second over the tutorial's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

RECIPES = ("tutorial", "studio", "bare")
TITLES = {"tutorial": "(a) tutorial", "studio": "(b) studio", "bare": "(b) without progress events"}


def prepare(scale: int, path: Path) -> dict:
    import workload

    tok = workload.tokenizer()
    config = workload.preset_config(gradient_checkpointing="auto")
    tutorial, studio = workload.tutorial_examples(tok, config), workload.studio_examples(tok, config)
    pad = [{"input_ids": [tok.pad_token_id], "labels": [workload.IGNORE]}]
    used = workload.renumber(tutorial, studio, pad)
    shape = workload.index_shape(scale)
    assert used <= shape["vocab_size"], f"{used} token ids do not fit a vocabulary of {shape['vocab_size']}"
    spec = {"tutorial": tutorial, "studio": studio, "shape": shape, "pad_id": pad[0]["input_ids"][0]}
    path.write_text(json.dumps(spec), encoding="utf-8")
    return spec


def run_recipe(recipe: str, data: Path, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(HERE / "train_recipes.py"), recipe, str(data), str(steps)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{recipe} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def steps_of(run: dict, accumulation: int) -> list[list[list[int]]]:
    """Per optimizer step, its micro-batches as lists of example indices (lengths alongside)."""
    batches = run["batches"]
    return [batches[i:i + accumulation] for i in range(0, len(batches), accumulation)]


def summarise(runs: list[dict], warmup: int, accumulation: int, shape: dict, packed: bool,
              checkpointing: bool) -> dict:
    import workload

    rates, examples_rates, callback, wall = [], [], [], []
    timed_batches = None
    for run in runs:
        steps = steps_of(run, accumulation)[warmup:]
        ends = run["step_end"]
        seconds = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - run["started"]
        real = sum(n for step in steps for batch in step for _, n in batch)
        rates.append(real / seconds)
        examples_rates.append(sum(len(b) for step in steps for b in step) / seconds)
        callback.append(run["callback_seconds"] / (run["ended"] - run["started"]))
        wall.append(seconds)
        timed_batches = [[n for _, n in batch] for step in steps for batch in step]
    count = workload.flops(shape, timed_batches, packed, checkpointing, lora_r=8)
    losses = runs[0]["loss"][warmup:]
    return {"tokens_per_s": statistics.median(rates), "examples_per_s": statistics.median(examples_rates),
            "spread": (min(rates), max(rates)), "padding": count["padding"], "computed": count["computed"],
            "real": count["real"], "flops_per_token": count["flops"] / count["real"],
            "rss": max(r["peak_rss_mb"] for r in runs), "loss": sum(losses) / len(losses),
            "losses_agree": all(r["loss"] == runs[0]["loss"] for r in runs),
            "callback": statistics.median(callback),
            "order": [[[i for i, _ in batch] for batch in step] for run in runs
                      for step in steps_of(run, accumulation)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per process, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--scale", type=int, default=4, help="divide Index-1.9B's widths and depth by this")
    opts = parser.parse_args()
    import workload

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "examples.json"
        spec = prepare(opts.scale, data)
        runs = {name: [] for name in RECIPES}
        for round_ in range(opts.rounds):
            for name in RECIPES:
                runs[name].append(run_recipe(name, data, opts.steps))
                print(f"round {round_ + 1}/{opts.rounds} {name}: "
                      f"{runs[name][-1]['step_end'][-1] - runs[name][-1]['started']:.1f} s", flush=True)
    shape, accumulation = spec["shape"], 4
    packed = runs["studio"][0]["collator"] == "DataCollatorWithFlattening"
    studio_ckpt = runs["studio"][0]["checkpointing_on"]
    s = {"tutorial": summarise(runs["tutorial"], opts.warmup, accumulation, shape, False, True),
         "studio": summarise(runs["studio"], opts.warmup, accumulation, shape, packed, studio_ckpt),
         "bare": summarise(runs["bare"], opts.warmup, accumulation, shape, packed, studio_ckpt)}
    same_order = s["tutorial"]["order"] == s["studio"]["order"] == s["bare"]["order"]
    lengths = {k: [len(r["input_ids"]) for r in spec[k]] for k in ("tutorial", "studio")}
    print(f"\nmodel: Llama layout, Index-1.9B / {opts.scale}: hidden {shape['hidden_size']}, "
          f"intermediate {shape['intermediate_size']}, {shape['num_hidden_layers']} layers, "
          f"{shape['num_attention_heads']} heads, vocab {shape['vocab_size']}; float32, 1 CPU thread, random init")
    print(f"data: {DATA_NOTE}; {len(lengths['tutorial'])} examples, mean length tutorial "
          f"{statistics.mean(lengths['tutorial']):.1f}, studio {statistics.mean(lengths['studio']):.1f} tokens")
    print(f"timed: {opts.rounds} rounds x {opts.steps - opts.warmup} optimizer steps of 16 examples "
          f"(first {opts.warmup} of {opts.steps} per process discarded); same examples per step in every "
          f"recipe: {'yes' if same_order else 'NO'}")
    print(f"studio: collator {runs['studio'][0]['collator']}, {runs['studio'][0]['checkpointing']}")
    print(f"full epoch padding at batch 4 (seeded random order): tutorial "
          f"{100 * workload.epoch_padding(lengths['tutorial'], 4, 42):.1f}%, studio "
          f"{0.0 if packed else 100 * workload.epoch_padding(lengths['studio'], 4, 42):.1f}%\n")
    header = (f"{'recipe':30} {'computed':>9} {'real':>7} {'padding':>8} {'GFLOP/tok':>10} "
              f"{'real tok/s':>10} {'(min-max)':>13} {'ex/s':>6} {'peak RSS':>9} {'loss':>7} {'events':>7}")
    print(header)
    for name in RECIPES:
        r = s[name]
        print(f"{TITLES[name]:30} {r['computed']:>9,} {r['real']:>7,} {100 * r['padding']:>7.1f}% "
              f"{r['flops_per_token'] / 1e9:>10.3f} {r['tokens_per_s']:>10.1f} "
              f"{r['spread'][0]:>6.0f}-{r['spread'][1]:<6.0f} {r['examples_per_s']:>6.2f} "
              f"{r['rss']:>6.0f} MB {r['loss']:>7.4f} {100 * r['callback']:>6.2f}%")
    flop_ratio = (s["tutorial"]["flops_per_token"] * s["tutorial"]["real"]) / (
        s["studio"]["flops_per_token"] * s["studio"]["real"])
    print(f"\nFLOP ratio (a)/(b) for the same examples: {flop_ratio:.2f}; per real token: "
          f"{s['tutorial']['flops_per_token'] / s['studio']['flops_per_token']:.2f}")
    print(f"examples/s ratio (b)/(a): {s['studio']['examples_per_s'] / s['tutorial']['examples_per_s']:.2f}")
    print(f"progress events: {100 * s['studio']['callback']:.2f}% of (b)'s training time inside the "
          f"callback (measured); (b) without them ran at {s['bare']['tokens_per_s']:.1f} real tok/s, "
          f"{100 * (s['bare']['tokens_per_s'] / s['studio']['tokens_per_s'] - 1):+.1f}% (wall clock, noisy)")
    print(f"losses identical across rounds: " + ", ".join(
        f"{n} {'yes' if s[n]['losses_agree'] else 'no'}" for n in RECIPES))
    print(f"total {time.time() - started:.0f} s")
    print(f"speedup {s['studio']['tokens_per_s'] / s['tutorial']['tokens_per_s']:.2f}")


DATA_NOTE = ("../shared/data/huanhuan.json tokenised with the real Qwen2 BPE (../shared/tokenizers/qwen2-chatml) "
             "+ Index's special tokens, as a stand-in for Index's SentencePiece tokenizer")

if __name__ == "__main__":
    main()
