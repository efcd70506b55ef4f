"""Side-by-side chat speed and memory: the base model alone against ChatEngine's base + tuned panes.

    .venv/bin/python bench/chat_speed.py [--tokens 48] [--rounds 2]

A random-init Llama with Index-1.9B/4's layers and the Qwen2 vocabulary (the prompt is the Index
template over the real Qwen2 tokenizer), float32, one CPU thread, and a LoRA adapter of the Index
preset (r 8, all 7 linears) with random B so the tuned answer really differs. Each measurement runs in
a fresh process, interleaved per round: `base` decodes one answer with the plain model (no peft),
`compare` runs ChatEngine.compare with the adapter (both panes in one mixed-adapter batch), and
`sequential` runs the same compare forced to one forward pass per pane (the previous engine).
Memory: peak RSS, and the peak above the process's RSS before the model was built (the model's share).
Every pane decodes exactly --tokens tokens (stop tokens ignored) so the panes do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
QUESTION = [{"role": "user", "content": "小主，外头下雪了，可要奴婢去请太医？"}]
MODES = ("base", "compare", "sequential")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def setup():
    import torch

    import workload
    from lora_studio.templates import ChatRenderer

    torch.set_num_threads(1)
    tok = workload.tokenizer()
    renderer = ChatRenderer(tok, "index", "index", "现在你要扮演皇帝身边的女人--甄嬛")
    shape = {**workload.index_shape(4), "vocab_size": len(tok)}
    return tok, renderer, shape


def make_adapter(dest: Path) -> None:
    import workload
    from lora_studio.recipe import lora_config
    from peft import get_peft_model

    _tok, _renderer, shape = setup()
    model = workload.build_model(shape, seed=0)
    lora = lora_config(workload.preset_config(), model)
    lora.init_lora_weights = False  # random B: an adapter that changes the answers
    get_peft_model(model, lora).save_pretrained(str(dest))


def measure(mode: str, adapter: str, tokens: int) -> dict:
    import torch

    import workload
    from lora_studio.chat import ChatEngine, _Batch
    from lora_studio.sampling import SamplingConfig
    from lora_studio.workspace import Workspace

    tok, renderer, shape = setup()
    before = rss_mb()
    model = workload.build_model(shape, seed=0).eval()
    sampling = SamplingConfig(max_new_tokens=tokens, temperature=0)
    prompt = renderer.encode_prompt(QUESTION)
    result = {"mode": mode, "before_mb": before, "prompt_tokens": len(prompt)}
    if mode == "base":
        ids, cache, started = torch.tensor([prompt]), None, time.perf_counter()
        with torch.inference_mode():
            for _ in range(tokens):
                out = model(input_ids=ids, cache=cache, use_cache=True)
                cache, ids = out.cache, out.logits[:, -1:].argmax(-1)
        result["base_tps"] = tokens / (time.perf_counter() - started)
    else:
        engine = ChatEngine(Workspace(tempfile.gettempdir()))  # the model is handed in; nothing is looked up
        engine.model, engine.tokenizer, engine.renderer = model, tok, renderer
        engine.stop_token_ids = []  # same work in every pane: exactly `tokens` tokens each
        engine.set_adapter(Path(adapter))
        if mode == "sequential":
            engine._batches = lambda panes: [_Batch(engine, [p], mixed=False) for p in panes]
        started = time.perf_counter()
        for comparison in engine.compare(QUESTION, sampling=sampling):
            pass
        result["wall_s"] = time.perf_counter() - started
        result["base_tps"] = comparison.stats["base"].tokens_per_second
        result["tuned_tps"] = comparison.stats["tuned"].tokens_per_second
        result["differ"] = comparison.base != comparison.tuned
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(mode: str, adapter: Path, tokens: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--worker", mode, str(adapter), str(tokens)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        make_adapter(adapter)
        results = {mode: [] for mode in MODES}
        for _ in range(opts.rounds):
            for mode in MODES:
                results[mode].append(run(mode, adapter, opts.tokens))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], float)}
           for m, rs in results.items()}
    base = med["base"]
    print(f"model: Llama, Index-1.9B/4 layers + Qwen2 vocabulary, float32, 1 CPU thread; {opts.tokens} "
          f"tokens per answer, greedy, prompt {results['base'][0]['prompt_tokens']} tokens, "
          f"median of {opts.rounds} fresh processes each\n")
    print(f"{'mode':34} {'base tok/s':>10} {'tuned tok/s':>11} {'tuned/base':>10} {'peak RSS':>9} "
          f"{'model share':>11}")
    print(f"{'base model alone (no adapter)':34} {base['base_tps']:>10.1f} {'':>11} {'':>10} "
          f"{base['peak_mb']:>6.0f} MB {base['peak_mb'] - base['before_mb']:>8.0f} MB")
    for mode, title in (("compare", "side by side (one batch)"), ("sequential", "side by side (pane by pane)")):
        r = med[mode]
        print(f"{title:34} {r['base_tps']:>10.1f} {r['tuned_tps']:>11.1f} {r['tuned_tps'] / r['base_tps']:>10.2f} "
              f"{r['peak_mb']:>6.0f} MB {r['peak_mb'] - r['before_mb']:>8.0f} MB")
    c = med["compare"]
    print(f"\nanswers differ (the adapter is applied): {all(r['differ'] for r in results['compare'])}")
    print(f"side-by-side peak memory / base alone: {c['peak_mb'] / base['peak_mb']:.2f} (process), "
          f"{(c['peak_mb'] - c['before_mb']) / (base['peak_mb'] - base['before_mb']):.2f} (model share)")
    print(f"tuned pane / base model alone: {c['tuned_tps'] / base['base_tps']:.2f}; both answers per second "
          f"of wall time: {2 * opts.tokens / c['wall_s']:.1f} tok/s (pane by pane: "
          f"{2 * opts.tokens / med['sequential']['wall_s']:.1f})")
    print(f"tuned/base {c['tuned_tps'] / c['base_tps']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        main()
