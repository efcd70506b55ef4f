"""A tiny synthetic checkpoint in bilibili's Index-1.9B layout, built in-process for tests.

It reproduces what matters about the real one (NOTES.md) at a size that builds in well under a
second: config.json with model_type "index" and norm_head 1, a SentencePiece tokenizer.model with
<unk> 0 / <s> 1 / </s> 2 / reserved_0 3 / reserved_1 4 and byte fallback, a tokenizer_config.json that
names the remote-code tokenizer class, and pytorch_model.bin in Llama parameter names whose lm_head
rows are deliberately NOT unit length (the real NormHead normalises them at run time).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

# Written for these tests; Chinese and English so that both scripts get real pieces.
CORPUS = """\
皇上万福金安，臣妾给皇上请安。
臣妾甄嬛，家父是大理寺少卿甄远道。
今日天朗气清，正宜去倚梅园赏梅花。
眉姐姐是臣妾自幼的知己，情同姐妹。
华妃娘娘盛气凌人，臣妾只得处处小心。
碎玉轩虽然偏僻，却也清净自在。
槿汐是臣妾身边最得力的姑姑。
流朱在院中浇花，浣碧在屋里绣荷包。
愿得一心人，白首不相离。
御膳房备了桂花糕和莲子羹，请皇上尝尝。
果郡王吹得一手好笛子，风流潇洒。
安陵容心思细腻，歌声婉转动人。
皇后娘娘端庄贤淑，母仪天下。
宫中人多口杂，说话做事都要谨慎。
臣妾常常思念家中的父母和妹妹。
现在你要扮演皇帝身边的女人，名字叫甄嬛。
你是谁？你好！你喜欢什么花？你会弹琴吗？
The studio trains small adapters on a laptop and compares answers side by side.
A tokenizer splits text into pieces; the model predicts the next piece.
Low rank adaptation keeps the base weights frozen and learns a small update.
"""

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=256)
SPECIAL_IDS = {"<unk>": 0, "<s>": 1, "</s>": 2, "reserved_0": 3, "reserved_1": 4}


def train_tokenizer_model(vocab_size: int = 600, add_dummy_prefix: bool = True) -> bytes:
    """A SentencePiece BPE model with Index's id layout; deterministic (one thread, fixed input)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 3), model_writer=out, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=["reserved_0", "reserved_1"],
        add_dummy_prefix=add_dummy_prefix, num_threads=1, minloglevel=2)
    return out.getvalue()


def index_config(vocab_size: int) -> dict:
    """config.json in the Index checkpoint's own format, tiny shape."""
    return {
        "architectures": ["IndexForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_index.IndexConfig",
                     "AutoModelForCausalLM": "modeling_index.IndexForCausalLM"},
        "model_type": "index", "norm_head": 1, "hidden_act": "silu", "initializer_range": 0.02,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
        "tie_word_embeddings": False, "use_cache": True, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "vocab_size": vocab_size, **SHAPE,
    }


def tokenizer_config() -> dict:
    """tokenizer_config.json naming the remote-code class, as the real checkpoint does."""
    return {
        "auto_map": {"AutoTokenizer": ["tokenization_index.IndexTokenizer", None]},
        "tokenizer_class": "IndexTokenizer", "add_bos_token": False, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "clean_up_tokenization_spaces": False, "model_max_length": 4096, "sp_model_kwargs": {},
    }


def random_state_dict(config: dict, seed: int = 0) -> dict:
    """Llama-named weights; lm_head rows get norms between 0.5 and 3 so normalising them matters."""
    import torch

    from lora_studio.index_model import llama_config_from_index

    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config_from_index(config))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    head = state["lm_head.weight"]
    row_norms = 0.5 + 2.5 * torch.rand(head.shape[0], 1, generator=generator)
    state["lm_head.weight"] = head / head.norm(dim=1, keepdim=True) * row_norms
    return state


def build_index_checkpoint(dest: Path, add_dummy_prefix: bool = True, seed: int = 0) -> Path:
    """Write the tiny Index checkpoint into `dest` (created) and return `dest`."""
    import torch

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model_bytes = train_tokenizer_model(add_dummy_prefix=add_dummy_prefix)
    (dest / "tokenizer.model").write_bytes(model_bytes)
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2), encoding="utf-8")
    config = index_config(vocab_size=_piece_count(model_bytes))
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.save(random_state_dict(config, seed), dest / "pytorch_model.bin")
    return dest


def _piece_count(model_bytes: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model_bytes).get_piece_size()
