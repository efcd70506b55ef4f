"""The benchmark workload shared by train_speed.py and gpu_check.py: tokens, model shape, FLOP count.

Lengths are real: the Zhen Huan records tokenised with the real Qwen2 BPE tokenizer in
../shared/tokenizers/qwen2-chatml (Index's SentencePiece tokenizer is not available offline), with
Index's special tokens (<unk>, </s>, reserved_0, reserved_1) as single tokens, as Index has them.
On these records it gives 33.6% padding at batch 4 in random order, Index's tokenizer about 31%.

Two encodings of the same records, in the same order:
- the tutorial's `process_func`: role words written literally ("<unk>system...reserved_0user...
  reserved_1assistant"), the answer, then the pad token <unk> as the end token; prompt masked with -100;
- the studio's: `trainer_setup.encode_data` with the preset's "index" template (what users get).
Token ids are then renumbered densely (the ids the data uses, in sorted order), so that a scaled-down
vocabulary keeps Index's head-to-body proportion; lengths and labels are untouched.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "huanhuan.json"
TOKENIZER = SHARED / "tokenizers" / "qwen2-chatml"
PRESET = ROOT / "presets" / "index-1.9b-chat-huanhuan.yaml"
IGNORE = -100


def index_shape(scale: int = 1) -> dict:
    """Index-1.9B's shape, every width, the depth and the vocabulary divided by `scale`."""
    from lora_studio.index_model import INDEX_1_9B_CONFIG as C

    heads = C["num_attention_heads"] // scale  # head_dim stays 128, as in Index
    return {"hidden_size": C["hidden_size"] // scale, "intermediate_size": C["intermediate_size"] // scale,
            "num_hidden_layers": C["num_hidden_layers"] // scale, "num_attention_heads": heads,
            "num_key_value_heads": heads, "vocab_size": C["vocab_size"] // scale,
            "rms_norm_eps": C["rms_norm_eps"], "rope_theta": C["rope_theta"],
            "max_position_embeddings": C["max_position_embeddings"]}


def build_model(shape: dict, seed: int = 0, dtype=None, device: str = "cpu"):
    """A randomly initialised LlamaForCausalLM of `shape` (Index is Llama once its head is normalised).

    Built directly on `device` in `dtype` (a 2B model initialised on a CPU takes minutes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{k: v for k, v in shape.items() if k != "rope_theta"},
                         rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
                         tie_word_embeddings=False, use_cache=False, pad_token_id=0,
                         attn_implementation="sdpa")
    with torch.device(device):
        return LlamaForCausalLM._from_config(config, dtype=dtype or torch.float32)


def tokenizer(path: Path = TOKENIZER):
    """The Qwen2 BPE tokenizer with Index's special tokens; <unk> pads, </s> ends a turn."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_special_tokens({"additional_special_tokens": ["<unk>", "</s>", "reserved_0", "reserved_1"]})
    tok.pad_token, tok.eos_token = "<unk>", "</s>"
    return tok


def preset_config(**changes):
    """The Index preset on the real data, with the studio's defaults for everything it does not set."""
    from lora_studio.config import load_yaml

    return load_yaml(PRESET).replace(data_files=[str(DATA)], **changes)


def tutorial_examples(tok, config) -> list[dict]:
    """The tutorial's process_func, as written (MAX_LENGTH = the preset's cutoff_len, 384)."""
    records = json.loads(DATA.read_text(encoding="utf-8"))
    rows = []
    for r in records:
        prompt = tok(f"<unk>system{config.system_prompt}reserved_0user{r['instruction'] + r['input']}"
                     "reserved_1assistant", add_special_tokens=False)["input_ids"]
        answer = tok(r["output"], add_special_tokens=False)["input_ids"]
        ids = (prompt + answer + [tok.pad_token_id])[: config.cutoff_len]
        labels = ([IGNORE] * len(prompt) + answer + [tok.pad_token_id])[: config.cutoff_len]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows


def studio_examples(tok, config) -> list[dict]:
    """The studio's own encoding path (trainer_setup.encode_data with the preset's template)."""
    from lora_studio.templates import ChatRenderer
    from lora_studio.trainer_setup import encode_data

    renderer = ChatRenderer(tok, config.template, "index", config.system_prompt)
    return encode_data(config, renderer).train.to_list()


def renumber(*encodings: list[dict]) -> int:
    """Renumber token ids densely across all encodings, in place; returns how many ids are used."""
    used = sorted({i for rows in encodings for row in rows for i in row["input_ids"]})
    new = {old: n for n, old in enumerate(used)}
    for rows in encodings:
        for row in rows:
            row["input_ids"] = [new[i] for i in row["input_ids"]]
            row["labels"] = [new[i] if i != IGNORE else IGNORE for i in row["labels"]]
    return len(used)


def epoch_padding(lengths: list[int], batch: int, seed: int) -> float:
    """Padding fraction of computed tokens over a whole epoch in a seeded random order."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    computed = real = 0
    for start in range(0, len(order), batch):
        group = [lengths[i] for i in order[start:start + batch]]
        computed += max(group) * len(group)
        real += sum(group)
    return 1 - real / computed


# --- FLOPs ---------------------------------------------------------------------------------------
def flops(shape: dict, batches: list[list[int]], packed: bool, checkpointing: bool, lora_r: int) -> dict:
    """Analytic training FLOPs of micro-batches (lists of example lengths) for LoRA on all linears.

    Per computed token: forward 2N (N = linear weights incl. head), backward 2N for activation
    gradients only (frozen weights need no weight gradients; the embedding needs neither), LoRA
    6*r*(in+out) per module, and with checkpointing one more forward of the decoder layers.
    Attention (QK^T and PV) is counted as computed: SDPA with a mask does the full square, so a padded
    row costs L^2 and a packed batch (T tokens) T^2 per layer; backward twice the forward.
    """
    h, i, layers, v = (shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"],
                       shape["vocab_size"])
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    layer_w = h * h * 2 + h * kv * 2 + 3 * h * i
    lora = lora_r * ((h + h) * 2 + (h + kv) * 2 + 3 * (h + i))
    computed = real = 0
    attention_square = 0  # sum over rows of (keys x queries)
    for lengths in batches:
        real += sum(lengths)
        if packed:
            computed += sum(lengths)
            attention_square += sum(lengths) ** 2
        else:
            computed += max(lengths) * len(lengths)
            attention_square += max(lengths) ** 2 * len(lengths)
    attn_fwd = layers * 4 * h * attention_square
    layer_fwd = layers * (2 * layer_w * computed) + attn_fwd
    head_fwd = 2 * h * v * computed
    total = (layer_fwd + head_fwd) * 2 + attn_fwd + layers * 6 * lora * computed
    if checkpointing:
        total += layer_fwd
    return {"computed": computed, "real": real, "flops": total,
            "padding": 1 - real / computed if computed else 0.0}
