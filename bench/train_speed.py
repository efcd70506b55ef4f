"""Training throughput: the tutorial's recipe against the studio's, and the studio's against the machine's limit.

    .venv/bin/python bench/train_speed.py [--rounds 3] [--steps 5] [--warmup 1] [--scale 4] [--profile]

A script that prints numbers, not a test. The workload (bench/workload.py): the real Zhen Huan set,
real token lengths (Qwen2 BPE + Index's special tokens), a random-init Llama with Index-1.9B's
proportions divided by --scale, the Index preset's LoRA (r 8, alpha 32, dropout 0.1, all 7 linears),
batch 4 x accumulation 4, random order with seed 42, so every recipe sees the same 16 examples in
each optimizer step. Each round runs each recipe in a fresh process (tutorial, studio, studio with the
full LM head, studio without events), interleaved; the first --warmup optimizer steps of every process
are discarded. After its steps each process measures the limit on the machine as it found it.

Printed: the recipes side by side; the limit (fp32 dense matmuls at the model's shapes on this one
thread) and the studio's useful FLOP rate as a fraction of it (useful FLOPs: `useful_flops`, see
bench/README.md); where each recipe's time goes (PhaseClock in train_recipes.py); what computing the
LM head only where a label is trained gains, measured here and analytic at Index-1.9B's real shape.
Rates are by CPU time (this process's one thread), which other processes on a shared machine move
much less than the wall clock (still up to ~8% between processes); wall-clock rates are printed beside. The last line is `speedup X.XX`: the studio's useful
(real, non-padding) tokens per CPU second over the tutorial's.
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

RECIPES = ("tutorial", "studio", "full_head", "bare")
TITLES = {"tutorial": "(a) tutorial", "studio": "(b) studio", "full_head": "(b) with the full LM head",
          "bare": "(b) without progress events"}
PHASES = ("data", "forward", "backward", "optimizer", "callbacks", "other")
IGNORE = -100
ACCUMULATION = 4


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
    path.write_text(json.dumps(spec, separators=(",", ":")), encoding="utf-8")  # compact: it travels to the GPU
    return spec


def run_recipe(recipe: str, data: Path, *numbers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(HERE / "train_recipes.py"), recipe, str(data), *map(str, numbers)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{recipe} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- FLOPs ---------------------------------------------------------------------------------------
def trained_positions(row: dict) -> int:
    """Positions whose next-token label is trained: the only ones whose logits the loss reads."""
    return sum(label != IGNORE for label in row["labels"][1:])


def useful_flops(shape: dict, examples: list[tuple[int, int]], lora_r: int = 8) -> dict:
    """The fewest FLOPs that give the same loss, for examples as (length, trained positions).

    Per token, for the frozen body (every linear of the decoder layers): forward 2 x weights, input
    gradient 2 x weights (frozen weights need no weight gradient); except the first layer's q, k, v,
    whose input gradient nothing needs (nothing trainable lies below them). LoRA (rank r on all 7
    linears): forward, input gradient and weight gradient, 2 x r x (in + out) each. LM head: forward and
    input gradient, 4 x hidden x vocab, only at the positions whose next-token label is trained.
    Attention: causal within each example (no padding, no other example): QK^T and PV forward
    2 x hidden x L(L+1) per layer, backward twice that. The embedding costs nothing (a lookup).
    No padding, no recompute; norms, activations and dropout are not counted (they are not matmuls).
    """
    h, i, layers, v = (shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"],
                       shape["vocab_size"])
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    layer_w = 2 * h * h + 2 * h * kv + 3 * h * i
    qkv = h * h + 2 * h * kv
    lora = lora_r * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i)) * layers
    tokens = sum(length for length, _ in examples)
    trained = sum(t for _, t in examples)
    parts = {"body": (4 * layers * layer_w - 2 * qkv) * tokens, "lora": 6 * lora * tokens,
             "head": 4 * h * v * trained,
             "attention": 6 * h * layers * sum(length * (length + 1) for length, _ in examples)}
    return {**parts, "total": sum(parts.values()), "tokens": tokens, "trained": trained}


def computed_flops(shape: dict, batches: list[list[int]], packed: bool, checkpointing: bool,
                   head_rows: int | None) -> int:
    """What a recipe computes (workload.flops: padding, recompute, the full attention square), with the
    head at `head_rows` positions instead of every computed one when the loss keeps only those."""
    import workload

    count = workload.flops(shape, batches, packed, checkpointing, lora_r=8)
    if head_rows is None:
        return count["flops"]
    return count["flops"] - 4 * shape["hidden_size"] * shape["vocab_size"] * (count["computed"] - head_rows)


# --- summaries -----------------------------------------------------------------------------------
def steps_of(run: dict) -> list[list[list[int]]]:
    """Per optimizer step, its micro-batches as lists of (example index, length)."""
    batches = run["batches"]
    return [batches[i:i + ACCUMULATION] for i in range(0, len(batches), ACCUMULATION)]


def seconds_of(run: dict, warmup: int, key: str) -> float:
    ends, start = run[f"{key}_end"], run[f"{key}_started"] if key == "cpu" else run["started"]
    return ends[-1] - (ends[warmup - 1] if warmup else start)


def phases_of(run: dict, warmup: int) -> dict:
    """CPU seconds per timed optimizer step in each phase; 'other' is the rest of the step."""
    marks, steps = run["phases"], len(run["phases"]) - warmup
    first = marks[warmup - 1] if warmup else dict.fromkeys(marks[0], 0.0)
    spent = {name: (marks[-1][name] - first[name]) / steps for name in marks[-1]}
    spent["other"] = seconds_of(run, warmup, "cpu") / steps - sum(spent.values())
    return spent


def summarise(runs: list[dict], warmup: int, shape: dict, rows: list[dict], packed: bool,
              checkpointing: bool, logits_only: bool) -> dict:
    import workload

    rates, wall_rates, examples_rates, callback, limits = [], [], [], [], []
    timed = None
    for run in runs:
        steps = steps_of(run)[warmup:]
        timed = [batch for step in steps for batch in step]
        real = sum(n for batch in timed for _, n in batch)
        rates.append(real / seconds_of(run, warmup, "cpu"))
        wall_rates.append(real / seconds_of(run, warmup, "step"))
        examples_rates.append(sum(len(b) for b in timed) / seconds_of(run, warmup, "cpu"))
        callback.append(run["callback_seconds"] / (run["ended"] - run["started"]))
        limits.append(run["limit"])
    examples = [(n, trained_positions(rows[i])) for batch in timed for i, n in batch]
    useful = useful_flops(shape, examples)
    lengths = [[n for _, n in batch] for batch in timed]
    computed = computed_flops(shape, lengths, packed, checkpointing, useful["trained"] if logits_only else None)
    count = workload.flops(shape, lengths, packed, checkpointing, lora_r=8)
    phases = [phases_of(run, warmup) for run in runs]
    fractions = [useful["total"] / useful["tokens"] * rate / limit["cpu_rate"] for rate, limit in zip(rates, limits)]
    wall_fractions = [useful["total"] / useful["tokens"] * rate / limit["wall_rate"]
                      for rate, limit in zip(wall_rates, limits)]
    losses = runs[0]["loss"][warmup:]
    return {"tokens_per_s": statistics.median(rates), "wall_tokens_per_s": statistics.median(wall_rates),
            "examples_per_s": statistics.median(examples_rates), "spread": (min(rates), max(rates)),
            "padding": count["padding"], "computed": count["computed"], "real": count["real"],
            "flops_per_token": computed / count["real"], "useful": useful,
            "useful_per_token": useful["total"] / useful["tokens"],
            "examples": examples, "micro_tokens": useful["tokens"] / len(timed), "micro_trained": useful["trained"] / len(timed),
            "limits": limits, "fraction": statistics.median(fractions),
            "fraction_spread": (min(fractions), max(fractions)), "wall_fraction": statistics.median(wall_fractions),
            "head_ab": runs[0].get("head_ab"),
            "phases": {name: statistics.median(p[name] for p in phases) for name in PHASES},
            "rss": max(r["peak_rss_mb"] for r in runs), "loss": sum(losses) / len(losses),
            "losses": runs[0]["loss"], "losses_agree": all(r["loss"] == runs[0]["loss"] for r in runs),
            "callback": statistics.median(callback),
            "order": [[[i for i, _ in batch] for batch in step] for run in runs for step in steps_of(run)]}


# --- printing ------------------------------------------------------------------------------------
def print_recipes(s: dict) -> None:
    print(f"{'recipe':30} {'computed':>9} {'real':>7} {'padding':>8} {'GFLOP/tok':>10} {'useful':>7} "
          f"{'tok/s cpu':>10} {'(min-max)':>11} {'tok/s wall':>10} {'ex/s':>6} {'peak RSS':>9} {'loss':>7} "
          f"{'events':>7}")
    for name in RECIPES:
        r = s[name]
        print(f"{TITLES[name]:30} {r['computed']:>9,} {r['real']:>7,} {100 * r['padding']:>7.1f}% "
              f"{r['flops_per_token'] / 1e9:>10.3f} {r['useful_per_token'] / 1e9:>7.3f} {r['tokens_per_s']:>10.1f} "
              f"{r['spread'][0]:>5.0f}-{r['spread'][1]:<5.0f} {r['wall_tokens_per_s']:>10.1f} "
              f"{r['examples_per_s']:>6.2f} {r['rss']:>6.0f} MB {r['loss']:>7.4f} {100 * r['callback']:>6.2f}%")
    print("GFLOP/tok: what the recipe computes per real token (padding, recompute, attention squares, the head "
          "where it runs); useful: the fewest that give the same loss (bench/README.md)")


def print_limit(s: dict) -> None:
    limits = [limit for name in RECIPES for limit in s[name]["limits"]]
    rates = [limit["cpu_rate"] / 1e9 for limit in limits]
    first = s["studio"]["limits"][0]
    print(f"\nlimit: fp32 dense matmuls at the model's shapes, one thread, measured in each process after its steps "
          f"(the studio's: {first['tokens']} tokens x in x out for each linear, forward and input gradient; the head "
          f"at {first['head_tokens']} rows): median {statistics.median(rates):.1f} GFLOP/s by CPU time "
          f"(processes {min(rates):.1f}-{max(rates):.1f}), "
          f"{statistics.median(l['wall_rate'] for l in limits) / 1e9:.1f} by wall time")
    for name in RECIPES:
        r = s[name]
        rate = r["useful_per_token"] * r["tokens_per_s"]
        low, high = r["fraction_spread"]
        print(f"{TITLES[name]:30} useful {rate / 1e9:6.1f} GFLOP/s = {r['fraction']:.2f} of its process's limit "
              f"(rounds {low:.2f}-{high:.2f}; by wall time {r['wall_fraction']:.2f})")
    print(f"fraction {s['studio']['fraction']:.2f} (the studio recipe's useful FLOP rate over the limit, CPU time)")


def print_phases(s: dict) -> None:
    print("\nwhere the time goes (CPU seconds per optimizer step, median over rounds; share of the step):")
    print(f"{'recipe':30} " + " ".join(f"{name:>15}" for name in PHASES) + f" {'step':>7}")
    for name in RECIPES:
        spent = s[name]["phases"]
        step = sum(spent.values())
        print(f"{TITLES[name]:30} " + " ".join(f"{spent[p]:>7.3f} {100 * spent[p] / step:>5.1f}% " for p in PHASES)
              + f"{step:>7.2f}")
    print("data: fetch + collate; forward: compute_loss (forward and loss); backward; optimizer: clip, step, "
          "zero_grad; callbacks: every hook; other: the Trainer loop's own (FLOP counting, loss bookkeeping)")


def print_logits_gain(s: dict, shape: dict, scale: int) -> None:
    import workload

    studio, full = s["studio"], s["full_head"]
    measured = studio["tokens_per_s"] / full["tokens_per_s"] - 1
    trained = studio["useful"]["trained"] / studio["useful"]["tokens"]
    print(f"\nlogits only where a label is trained: {100 * trained:.1f}% of the positions predict a trained label")
    for title, at in ((f"Index-1.9B / {scale} (measured here)", shape),
                      ("Index-1.9B's real shape (vocab 65029, hidden 2048, 36 layers)", workload.index_shape(1))):
        kept = useful_flops(at, studio["examples"])
        every = useful_flops(at, [(n, n) for n, _ in studio["examples"]])
        share = every["head"] / every["total"]
        saved = 1 - kept["total"] / every["total"]
        print(f"  {title}: the head is {100 * share:.1f}% of a step's useful FLOPs with logits everywhere; "
              f"keeping only trained positions saves {100 * saved:.1f}% (analytic: {1 / (1 - saved):.3f}x)")
    ab = full["head_ab"]
    side = ab["seconds"]["full"] / ab["seconds"]["short"] - 1
    diff = max(abs(a - b) for a, b in zip(ab["losses"]["full"], ab["losses"]["short"]))
    print(f"  measured at Index-1.9B / {scale}, side by side in one process ({ab['micro_batches']} micro-batches "
          f"each, forward + backward): {ab['seconds']['full']:.2f} s with the full head, "
          f"{ab['seconds']['short']:.2f} s with logits only where trained = {100 * side:+.1f}% speed; "
          f"the same micro-batch losses: {'yes' if diff < 1e-5 else 'NO'} (max diff {diff:.1e})")
    print(f"  as separate training runs (processes differ by more than this on a shared machine): "
          f"{studio['tokens_per_s']:.1f} vs {full['tokens_per_s']:.1f} real tok/s = {100 * measured:+.1f}%; "
          f"the same training losses: {'yes' if _close(studio['losses'], full['losses']) else 'NO'} "
          f"(max diff {max(abs(a - b) for a, b in zip(studio['losses'], full['losses'])):.1e})")


def print_ops(ops: dict, shown: int = 14) -> None:
    total = sum(ops.values())
    print(f"\nthe studio recipe by operator (torch.profiler, self CPU time of the steps after the first, "
          f"{total:.2f} s with the profiler's own overhead):")
    for kind, seconds in sorted(ops.items(), key=lambda item: -item[1])[:shown]:
        print(f"  {kind:32} {seconds:7.3f} s {100 * seconds / total:5.1f}%")
    rest = sorted(ops.values(), reverse=True)[shown:]
    print(f"  {'the other ' + str(len(rest)) + ' operators':32} {sum(rest):7.3f} s {100 * sum(rest) / total:5.1f}%")


def _close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per process, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--scale", type=int, default=4, help="divide Index-1.9B's widths and depth by this")
    parser.add_argument("--profile", action="store_true",
                        help="also run the studio recipe once under torch.profiler: time by kind of operator")
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
        profile = run_recipe("profile", data, opts.steps) if opts.profile else None
    shape = spec["shape"]
    packed = runs["studio"][0]["collator"] == "DataCollatorWithFlattening"
    ckpt = runs["studio"][0]["checkpointing_on"]
    s = {"tutorial": summarise(runs["tutorial"], opts.warmup, shape, spec["tutorial"], False, True, False)}
    for name in RECIPES[1:]:
        s[name] = summarise(runs[name], opts.warmup, shape, spec["studio"], packed, ckpt, name != "full_head")
    same_order = all(s[name]["order"] == s["tutorial"]["order"] for name in RECIPES)
    lengths = {k: [len(r["input_ids"]) for r in spec[k]] for k in ("tutorial", "studio")}
    print(f"\nmodel: Llama layout, Index-1.9B / {opts.scale}: hidden {shape['hidden_size']}, "
          f"intermediate {shape['intermediate_size']}, {shape['num_hidden_layers']} layers, "
          f"{shape['num_attention_heads']} heads, vocab {shape['vocab_size']}; float32, 1 CPU thread, random init")
    print(f"data: {DATA_NOTE}; {len(lengths['tutorial'])} examples, mean length tutorial "
          f"{statistics.mean(lengths['tutorial']):.1f}, studio {statistics.mean(lengths['studio']):.1f} tokens")
    print(f"timed: {opts.rounds} rounds x {opts.steps - opts.warmup} optimizer steps of 16 examples "
          f"(first {opts.warmup} of {opts.steps} per process discarded); same examples per step in every "
          f"recipe: {'yes' if same_order else 'NO'}; machine load at the end {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (it moves wall-clock rates; CPU-time ones much less)")
    print(f"studio: collator {runs['studio'][0]['collator']}, {runs['studio'][0]['checkpointing']}; "
          f"a micro-batch holds {s['studio']['micro_tokens']:.0f} tokens, {s['studio']['micro_trained']:.0f} "
          f"of them predicting a trained label")
    print(f"full epoch padding at batch 4 (seeded random order): tutorial "
          f"{100 * workload.epoch_padding(lengths['tutorial'], 4, 42):.1f}%, studio "
          f"{0.0 if packed else 100 * workload.epoch_padding(lengths['studio'], 4, 42):.1f}%\n")
    print_recipes(s)
    print_limit(s)
    print_phases(s)
    print_logits_gain(s, shape, opts.scale)
    if profile is not None:
        print_ops(profile["ops"])
    flop_ratio = (s["tutorial"]["flops_per_token"] * s["tutorial"]["real"]) / (
        s["studio"]["flops_per_token"] * s["studio"]["real"])
    print(f"\nFLOP ratio (a)/(b) for the same examples: {flop_ratio:.2f}; per real token: "
          f"{s['tutorial']['flops_per_token'] / s['studio']['flops_per_token']:.2f}")
    print(f"examples/s ratio (b)/(a): {s['studio']['examples_per_s'] / s['tutorial']['examples_per_s']:.2f}")
    print(f"progress events: {100 * s['studio']['callback']:.2f}% of (b)'s training time inside the "
          f"callback (measured); (b) without them ran at {s['bare']['tokens_per_s']:.1f} real tok/s, "
          f"{100 * (s['bare']['tokens_per_s'] / s['studio']['tokens_per_s'] - 1):+.1f}% (CPU time, noisy)")
    print("losses identical across rounds: " + ", ".join(
        f"{n} {'yes' if s[n]['losses_agree'] else 'no'}" for n in RECIPES))
    print(f"total {time.time() - started:.0f} s")
    print(f"speedup {s['studio']['tokens_per_s'] / s['tutorial']['tokens_per_s']:.2f}")


DATA_NOTE = ("../shared/data/huanhuan.json tokenised with the real Qwen2 BPE (../shared/tokenizers/qwen2-chatml) "
             "+ Index's special tokens, as a stand-in for Index's SentencePiece tokenizer")

if __name__ == "__main__":
    main()
