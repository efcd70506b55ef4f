"""bilibili's Index-1.9B checkpoints loaded natively, as Llama, without running the model's own code.

An Index checkpoint (config `model_type` "index") is a Llama model with Llama parameter names and one
departure: its `lm_head` is a NormHead that L2-normalises each weight row before use. Normalising the
rows once at load time gives a plain Linear head with identical logits, so `LlamaForCausalLM` serves
it, LoRA targets the same module names, and no remote code runs. The SentencePiece tokenizer becomes
a fast `LlamaTokenizer` with Index's ids (<unk> 0, <s> 1, </s> 2, reserved_0 3, reserved_1 4) and the
built-in "index" chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from . import pickles
from .errors import ModelError, first_line
from .i18n import msg

# IndexTeam/Index-1.9B-Chat's config.json, reconstructed from the published shape (NOTES.md), so that
# estimates and dry runs work before anything is downloaded. Read-only: `dict(INDEX_1_9B_CONFIG)` is a
# copy to change.
INDEX_1_9B_CONFIG = MappingProxyType({
    "architectures": ("IndexForCausalLM",),
    "auto_map": MappingProxyType({
        "AutoConfig": "configuration_index.IndexConfig",
        "AutoModelForCausalLM": "modeling_index.IndexForCausalLM",
    }),
    "model_type": "index",
    "norm_head": 1,
    "vocab_size": 65029,
    "hidden_size": 2048,
    "intermediate_size": 5888,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "initializer_range": 0.01,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "use_cache": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
})

SPECIAL_TOKEN_IDS = MappingProxyType({"<unk>": 0, "<s>": 1, "</s>": 2, "reserved_0": 3, "reserved_1": 4})


def is_index_config(config_dict: Mapping) -> bool:
    return isinstance(config_dict, Mapping) and config_dict.get("model_type") == "index"


def llama_config_from_index(config_dict: Mapping):
    """The `LlamaConfig` that runs an Index checkpoint once its head rows are normalised."""
    from transformers import LlamaConfig

    c = config_dict
    rope = {"rope_type": "default", "rope_theta": float(c.get("rope_theta", 10000.0))}
    scaling = c.get("rope_scaling")
    if scaling:  # the long-context variants scale RoPE; transformers 5 keeps it in rope_parameters
        rope.update({k: v for k, v in scaling.items() if k != "type"})
        rope["rope_type"] = scaling.get("rope_type") or scaling.get("type") or "default"
    try:
        return LlamaConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"],
            num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
            hidden_act=c.get("hidden_act", "silu"),
            max_position_embeddings=c.get("max_position_embeddings", 4096),
            initializer_range=c.get("initializer_range", 0.02), rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_parameters=rope, attention_bias=bool(c.get("attention_bias", False)),
            tie_word_embeddings=False,  # NormHead is its own weight, never the embedding
            bos_token_id=c.get("bos_token_id", 1), eos_token_id=c.get("eos_token_id", 2),
            pad_token_id=c.get("pad_token_id", 0), use_cache=c.get("use_cache", True),
            architectures=["LlamaForCausalLM"])
    except KeyError as exc:
        raise ModelError(msg("models.index_config_key", key=exc.args[0]), "config.json",
                         msg("models.index_config_key_fix")) from None


# --- tokenizer -----------------------------------------------------------------------------------
def load_index_tokenizer(path):
    """Index's SentencePiece tokenizer as a fast LlamaTokenizer with the built-in index template.

    Pieces between special tokens each get SentencePiece's dummy-prefix "▁" when the model asks for
    one (add_dummy_prefix): that is what bilibili's demo does by concatenating the ids of each piece
    encoded alone, so a rendered conversation tokenises exactly as the model was served.
    """
    path = Path(path)
    model_file = path / "tokenizer.model"
    if not model_file.is_file():
        raise ModelError(msg("models.index_no_tokenizer"), str(path), msg("models.index_no_tokenizer_fix"))
    _require_sentencepiece(path)
    from transformers import LlamaTokenizer

    from .templates import BUILTIN_TEMPLATES

    # legacy + add_prefix_space make LlamaTokenizer build a Metaspace pre-tokenizer with prepend
    # "always" (or "never"), and keep building it so when the saved tokenizer is loaded again.
    add_dummy_prefix = _adds_dummy_prefix(model_file)
    try:
        tokenizer = LlamaTokenizer.from_pretrained(
            str(path), add_bos_token=False, add_eos_token=False, unk_token="<unk>", bos_token="<s>",
            eos_token="</s>", pad_token="<unk>", legacy=True, add_prefix_space=add_dummy_prefix)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(msg("models.index_tokenizer_unreadable", detail=first_line(exc)), str(model_file),
                         msg("models.download_again_fix")) from None
    _check_special_ids(tokenizer, model_file)
    tokenizer.init_kwargs.pop("auto_map", None)  # a saved copy is a plain LlamaTokenizer, no remote code
    tokenizer.init_kwargs["legacy"] = True        # not saved by default; without it a reload uses "first"
    tokenizer.chat_template = BUILTIN_TEMPLATES["index"]
    return tokenizer


def _require_sentencepiece(path: Path) -> None:
    # Without protobuf transformers falls back to a tiktoken reader with a misleading error (NOTES.md).
    missing = []
    for module in ("sentencepiece", "google.protobuf"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.replace("google.", ""))
    if missing:
        raise ModelError(msg("models.index_needs_packages", names=", ".join(missing)), str(path),
                         msg("models.index_needs_packages_fix", packages=" ".join(missing)))


def _adds_dummy_prefix(model_file: Path) -> bool:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return bool(proto.normalizer_spec.add_dummy_prefix)


def _check_special_ids(tokenizer, model_file: Path) -> None:
    found = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKEN_IDS}
    if found != dict(SPECIAL_TOKEN_IDS):
        raise ModelError(msg("models.index_special_ids", found=found, expected=dict(SPECIAL_TOKEN_IDS)),
                         str(model_file), msg("models.index_special_ids_fix"))


# --- model ---------------------------------------------------------------------------------------
def load_index_model(path, dtype, **quantized):
    """`LlamaForCausalLM` with the Index weights and its lm_head rows L2-normalised (untied head).

    `quantized` is quantization.load_arguments' (bitsandbytes config and device map), or nothing; the
    head is never quantised, so its rows are normalised the same way.
    """
    from transformers import LlamaForCausalLM

    path = Path(path)
    config_dict = json.loads((path / "config.json").read_text(encoding="utf-8"))
    weights = [p for p in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                           "pytorch_model.bin.index.json") if (path / p).is_file()]
    if not weights:
        raise ModelError(msg("models.index_no_weights"), str(path), msg("models.index_no_weights_fix"))
    try:
        # from_pretrained reads .bin files with torch.load(weights_only=True): the official
        # pytorch_model.bin (plain tensors) loads, and a pickle holding anything else is refused unrun.
        with pickles.explained(path, "model"):
            model, info = LlamaForCausalLM.from_pretrained(
                str(path), config=llama_config_from_index(config_dict), dtype=dtype, weights_only=True,
                output_loading_info=True, **quantized)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(msg("models.index_weights_failed", detail=first_line(exc)), str(path / weights[0]),
                         msg("models.download_again_fix")) from None
    if info.get("missing_keys"):  # transformers would fill them with random values
        missing = sorted(info["missing_keys"])
        raise ModelError(msg("models.index_missing_tensors", count=len(missing), first=missing[0]),
                         str(path / weights[0]), msg("models.index_missing_tensors_fix"))
    if config_dict.get("norm_head", 1):
        normalise_head_rows(model)
    return model


def normalise_head_rows(model) -> None:
    """Replace lm_head rows by their unit vectors (in float32), as NormHead does before every use."""
    import torch

    head = model.get_output_embeddings().weight
    with torch.no_grad():
        unit = torch.nn.functional.normalize(head.float(), dim=1)
        head.copy_(unit.to(head.dtype))
