"""The reference workload on a GPU: tutorial recipe vs the studio's at Index-1.9B's exact shape, and more.

    .venv/bin/python bench/gpu_check.py --prepare   # here: encode the real data into bench/out/gpu/
    bash bench/gpu_check.sh [--steps 30]            # on the GPU machine (see bench/README.md)
    bash bench/gpu_check.sh --smoke                 # here, on a CPU: a tiny shape, few steps, same code

In one process, on a random-init LlamaForCausalLM with Index-1.9B-Chat's shape (36 layers, hidden
2048, vocab 65029) in bfloat16, with the preset's LoRA, over the real Zhen Huan lengths (prepared
here: the GPU machine has no `datasets` and no ../shared):
1. the tutorial's recipe, then the studio's: real tokens/s, MFU (useful FLOPs, train_speed.useful_flops:
   no padding, no recompute, the head only where a label is trained, over the GPU's dense bf16 peak),
   HFU (everything computed), peak GPU memory;
2. the studio's recipe with 4-bit QLoRA (RunConfig quantization 4bit): the random model is saved and
   loaded back through `lora_studio.models.load_model`, the library's own path (bitsandbytes NF4);
   peak memory and tokens/s;
3. chat: ChatEngine.compare's tokens/s per pane (base and tuned in one batch) and the base alone;
4. with more than one GPU visible: the studio's recipe under `torchrun --nproc_per_node N` (DDP,
   one process per GPU), tokens/s of all ranks together against one GPU's;
then the issue's targets as PASS/FAIL lines: the reference workload (3 epochs of Zhen Huan)
projected from the timed steps in 30 s or less, and MFU of 20% or more.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
OUT = HERE / "out" / "gpu"
SPEC = OUT / "examples.json.gz"  # gzip: what travels to the GPU machine has a size limit
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks
EPOCHS, TARGET_SECONDS, TARGET_MFU = 3, 30.0, 0.20
QUESTION = [{"role": "user", "content": "小主，外头下雪了，可要奴婢去请太医？"}]


def prepare() -> None:
    import train_speed
    import workload

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        plain = Path(folder) / "examples.json"
        train_speed.prepare(1, plain)
        SPEC.write_bytes(gzip.compress(plain.read_bytes()))
    shutil.copytree(workload.TOKENIZER, OUT / "tokenizer", dirs_exist_ok=True)
    print(f"wrote {SPEC} and {OUT}/tokenizer/")


def load_spec() -> dict:
    return json.loads(gzip.decompress(SPEC.read_bytes()).decode("utf-8"))


def tokenizer(spec: dict):
    import workload

    tok = workload.tokenizer(OUT / "tokenizer")
    tok.pad_token = tok.convert_ids_to_tokens(spec["pad_id"])
    return tok


def reset_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")


def train(recipe: str, spec: dict, model, steps: int, device: str, **changes) -> dict:
    """One recipe's run over `model`: step times, losses, batches and the peak memory since reset_memory."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    import train_recipes

    rows = spec["tutorial" if recipe == "tutorial" else "studio"]
    data = [{**row, "idx": n} for n, row in enumerate(rows)]
    record = {"step_end": [], "loss": [], "callback_seconds": 0.0, "checkpointing_on": True,
              "checkpointing": "gradient checkpointing on (the tutorial sets it)"}
    with tempfile.TemporaryDirectory() as out:
        extra = [train_recipes.step_callback(record)]
        if recipe == "tutorial":
            trainer, recorder = train_recipes.tutorial_trainer(model, tokenizer(spec), data, steps, out, extra)
        else:
            trainer, recorder = train_recipes.studio_trainer(model, tokenizer(spec), data, steps, out, extra,
                                                             record, True, **changes)
        trainer.remove_callback(PrinterCallback)  # one table at the end, not a log dict per step
        record["started"] = time.perf_counter()
        trainer.train()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    record["batches"] = recorder.batches
    record["peak_gb"] = peak_gb(device)
    del trainer, recorder
    return record


def run_recipe(recipe: str, spec: dict, shape: dict, steps: int, device: str) -> dict:
    import torch

    import workload

    reset_memory(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = workload.build_model(shape, seed=0, dtype=dtype, device=device)
    record = train(recipe, spec, model, steps, device)
    del model
    gc.collect()
    return record


def run_qlora(spec: dict, shape: dict, steps: int, device: str) -> dict:
    """The studio's recipe with quantization 4bit, the base loaded by lora_studio.models.load_model."""
    import torch

    import workload
    from lora_studio import quantization
    from lora_studio.models import load_model

    config = workload.preset_config(quantization="4bit")
    why = quantization.unavailable("4bit", quantization.compute_dtype(config))
    if why is not None:
        return {"skipped": why.render("en")}
    with tempfile.TemporaryDirectory() as folder:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = workload.build_model(shape, seed=0, dtype=dtype, device=device)
        model.save_pretrained(folder)  # safetensors, config.json: a model folder like a downloaded one
        del model
        reset_memory(device)
        model = load_model(Path(folder), config.replace(model_name_or_path=folder))
    record = train("studio", spec, model, steps, device, quantization="4bit")
    record["loaded_4bit"] = bool(getattr(model, "is_loaded_in_4bit", False))
    del model
    gc.collect()
    return record


def chat_panes(shape: dict, spec: dict, tokens: int, device: str) -> dict:
    """ChatEngine.compare's tokens/s per pane over a random adapter of the preset's shape, and the base alone.

    The model takes the real tokenizer's ids here (chat encodes text), so its vocabulary is the Qwen2
    tokenizer's, not Index's: a larger head than Index has."""
    import torch
    from peft import get_peft_model

    import workload
    from lora_studio.chat import ChatEngine
    from lora_studio.recipe import lora_config
    from lora_studio.sampling import SamplingConfig
    from lora_studio.templates import ChatRenderer
    from lora_studio.workspace import Workspace

    tok = workload.tokenizer(OUT / "tokenizer")
    renderer = ChatRenderer(tok, "index", "index", "现在你要扮演皇帝身边的女人--甄嬛")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    reset_memory(device)
    model = workload.build_model({**shape, "vocab_size": len(tok)}, seed=0, dtype=dtype, device=device).eval()
    with tempfile.TemporaryDirectory() as folder:
        lora = lora_config(workload.preset_config(), model)
        lora.init_lora_weights = False  # random B: the tuned answer differs
        peft_model = get_peft_model(model, lora)
        peft_model.save_pretrained(folder)
        model = peft_model.unload()
        engine = ChatEngine(Workspace(Path(folder) / "workspace"))
        engine.model, engine.tokenizer, engine.renderer = model, tok, renderer
        engine.stop_token_ids = []  # every pane decodes exactly `tokens` tokens
        prompt = torch.tensor([renderer.encode_prompt(QUESTION)], device=device)
        started, ids, cache = time.perf_counter(), prompt, None
        with torch.inference_mode():
            for _ in range(tokens):
                out = model(input_ids=ids, cache=cache, use_cache=True)
                cache, ids = out.cache, out.logits[:, -1:].argmax(-1)
        alone = tokens / (time.perf_counter() - started)
        engine.set_adapter(Path(folder))
        for comparison in engine.compare(QUESTION, sampling=SamplingConfig(max_new_tokens=tokens, temperature=0)):
            pass
    return {"alone": alone, "base": comparison.stats["base"].tokens_per_second,
            "tuned": comparison.stats["tuned"].tokens_per_second, "differ": comparison.base != comparison.tuned,
            "peak_gb": peak_gb(device)}


# --- several GPUs: torchrun ----------------------------------------------------------------------
def run_ddp(processes: int, steps: int, smoke: bool) -> list[dict]:
    """The studio's recipe under torchrun, one process per GPU (gloo on CPU for --smoke); each rank's record."""
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                str(Path(__file__)), "--ddp-worker", folder, "--steps", str(steps)] + (["--smoke"] if smoke else [])
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            return [{"failed": done.stderr[-2000:]}]
        return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("rank-*.json"))]


def ddp_worker(folder: str, steps: int, smoke: bool) -> None:
    import torch

    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        torch.cuda.set_device(local)
    torch.set_num_threads(1)
    spec = load_spec()
    record = run_recipe("studio", spec, shape_of(smoke), steps, device)
    Path(folder, f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")


# --- summaries -----------------------------------------------------------------------------------
def shape_of(smoke: bool) -> dict:
    import workload

    return {**workload.index_shape(16), "vocab_size": 8192} if smoke else workload.index_shape(1)


def summary(record: dict, spec_rows: list[dict], shape: dict, warmup: int, packed: bool, checkpointing: bool,
            peak: float, logits_only: bool) -> dict:
    import train_speed

    micro = record["batches"][warmup * 4:]
    lengths = [[n for _, n in batch] for batch in micro]
    seconds = record["step_end"][-1] - record["step_end"][warmup - 1]
    examples = [(n, train_speed.trained_positions(spec_rows[i])) for batch in micro for i, n in batch]
    useful = train_speed.useful_flops(shape, examples)
    done = train_speed.computed_flops(shape, lengths, packed, checkpointing,
                                      useful["trained"] if logits_only else None)
    real = sum(map(sum, lengths))
    computed = sum(max(b) * len(b) for b in lengths) if not packed else real
    return {"tok_s": real / seconds, "padding": 1 - real / computed, "mfu": useful["total"] / seconds / peak,
            "hfu": done / seconds / peak, "seconds": seconds, "loss": record["loss"][-1],
            "ids": [[i for i, _ in batch] for batch in micro]}


def print_targets(results: dict, spec: dict, opts) -> None:
    print(f"\ntargets (issue 13, one H100/H200), the reference workload = {EPOCHS} epochs of Zhen Huan "
          f"({len(spec['studio'])} records) at Index-1.9B's exact shape, projected from the timed steps:")
    for recipe in ("tutorial", "studio"):
        r = results[recipe]
        tokens = EPOCHS * sum(len(row["input_ids"]) for row in spec[recipe])
        projected = tokens / r["tok_s"]
        print(f"  {recipe:9} {tokens:,} real tokens in {projected:7.1f} s projected; MFU {100 * r['mfu']:.1f}%")
    s = results["studio"]
    projected = EPOCHS * sum(len(row["input_ids"]) for row in spec["studio"]) / s["tok_s"]
    note = " (smoke run on a tiny shape: not the target's workload)" if opts.smoke else ""
    print(f"{'PASS' if projected <= TARGET_SECONDS else 'FAIL'} reference workload <= {TARGET_SECONDS:.0f} s: "
          f"studio {projected:.1f} s{note}")
    print(f"{'PASS' if s['mfu'] >= TARGET_MFU else 'FAIL'} MFU >= {100 * TARGET_MFU:.0f}%: "
          f"studio {100 * s['mfu']:.1f}%{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="encode the data here, for the GPU run")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape on any device, to test this script")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per recipe")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chat-tokens", type=int, default=64, help="tokens each chat pane decodes")
    parser.add_argument("--ddp-worker", metavar="FOLDER", help=argparse.SUPPRESS)  # one torchrun rank
    opts = parser.parse_args()
    if opts.smoke:
        opts.steps, opts.warmup, opts.chat_tokens = 1, 2, 8
    if opts.ddp_worker:
        return ddp_worker(opts.ddp_worker, opts.warmup + opts.steps, opts.smoke)
    if opts.prepare:
        return prepare()
    import torch

    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = load_spec()
    shape = shape_of(opts.smoke)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
    import peft
    import transformers

    print(f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; shape {shape}", flush=True)
    results, steps = {}, opts.warmup + opts.steps
    for recipe in ("tutorial", "studio"):
        record = run_recipe(recipe, spec, shape, steps, device)
        packed = recipe == "studio" and record.get("collator") == "DataCollatorWithFlattening"
        results[recipe] = {**summary(record, spec[recipe], shape, opts.warmup, packed, record["checkpointing_on"],
                                     peak, recipe == "studio"), "peak_gb": record["peak_gb"],
                           "how": f"{'packed' if packed else 'padded'}, {record['checkpointing']}"}
        print(f"{recipe}: {results[recipe]['seconds']:.1f} s for {opts.steps} steps", flush=True)
    qlora = run_qlora(spec, shape, steps, device)
    if "skipped" not in qlora:
        results["qlora"] = {**summary(qlora, spec["studio"], shape, opts.warmup, True, qlora["checkpointing_on"],
                                      peak, True), "peak_gb": qlora["peak_gb"],
                            "how": f"studio + quantization 4bit (NF4 base loaded by models.load_model: "
                                   f"{'yes' if qlora['loaded_4bit'] else 'NO'}), {qlora['checkpointing']}"}
        print(f"qlora: {results['qlora']['seconds']:.1f} s for {opts.steps} steps", flush=True)
    t, s = results["tutorial"], results["studio"]
    print(f"\n{opts.steps} timed optimizer steps of 16 examples each (after {opts.warmup} warm-up), same examples "
          f"in both: {'yes' if t['ids'] == s['ids'] else 'NO'}; MFU peak {peak / 1e12:.0f} TFLOP/s")
    print(f"{'recipe':10} {'real tok/s':>11} {'padding':>8} {'MFU':>6} {'HFU':>6} {'peak GPU mem':>13} "
          f"{'last loss':>9}  how")
    for recipe, r in results.items():
        print(f"{recipe:10} {r['tok_s']:>11.0f} {100 * r['padding']:>7.1f}% {100 * r['mfu']:>5.1f}% "
              f"{100 * r['hfu']:>5.1f}% {r['peak_gb']:>10.2f} GB {r['loss']:>9.4f}  {r['how']}")
    if "skipped" in qlora:
        print(f"qlora      skipped: {qlora['skipped']}")
    chat = chat_panes(shape, spec, opts.chat_tokens, device)
    print(f"\nchat ({opts.chat_tokens} tokens a pane, greedy, Qwen2 vocabulary): base alone {chat['alone']:.1f} tok/s; "
          f"side by side base {chat['base']:.1f} tok/s, tuned {chat['tuned']:.1f} tok/s per pane; answers "
          f"differ: {'yes' if chat['differ'] else 'NO'}; peak GPU mem {chat['peak_gb']:.2f} GB")
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus > 1 or (opts.smoke and device == "cpu"):  # the smoke run checks the path with 2 CPU processes (gloo)
        ranks = run_ddp(gpus or 2, steps, opts.smoke)
        if "failed" in ranks[0]:
            print(f"multi-GPU: torchrun FAILED:\n{ranks[0]['failed']}")
        else:
            rates = [summary(r, spec["studio"], shape, opts.warmup, True, r["checkpointing_on"], peak, True)["tok_s"]
                     for r in ranks]
            print(f"multi-GPU: torchrun --nproc_per_node {len(ranks)}: {sum(rates):.0f} real tok/s over all ranks "
                  f"({', '.join(f'{x:.0f}' for x in rates)}) = {sum(rates) / s['tok_s']:.2f}x one process")
    else:
        print(f"multi-GPU: skipped ({gpus} GPU visible)")
    print_targets(results, spec, opts)
    print(f"total {time.time() - started:.0f} s")
    print(f"speedup {s['tok_s'] / t['tok_s']:.2f}")


if __name__ == "__main__":
    main()
