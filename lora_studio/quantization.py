"""QLoRA: the run's frozen base weights loaded quantised by bitsandbytes, checked, prepared and costed.

    quantization.check_available(config)      # before anything starts: bitsandbytes runs here, or a clear error
    models.load_model(...)                    # passes load_arguments(config) to from_pretrained
    model = quantization.prepare(model)       # recipe.assemble_run, before LoRA: peft's k-bit preparation

`quantization` is none, 8bit (LLM.int8(): int8 weights) or 4bit (NF4 with double quantisation and
bf16 compute, the QLoRA recipe). Only the linear layers inside the decoder blocks are quantised:
transformers keeps the embeddings and the output head as they are, and peft's
`prepare_model_for_kbit_training` then casts every parameter that is not quantised to float32. The
memory estimate (`frozen_weight_bytes`, used by estimate.memory_estimate) counts exactly that:

    quantised linear weights   4bit: 0.5 byte (NF4 code) + 1/64 byte (an 8-bit absmax per block of 64)
                                     + 4/(64 x 256) byte (a float32 absmax per 256 blocks: double quant)
                                     = 0.5159 byte per weight
                               8bit: 1 byte per weight (a float32 scale per output row, < 0.2%, left out)
    everything else            4 bytes per weight (float32 after peft's preparation): embeddings,
                               the head (unless tied to the embeddings), the norm weights

A QLoRA run's adapter is used over the base loaded as the run trained it: chat loads the base
quantised the same way (run_config_for gives the run's config), so its answers are the trained
model's. An export merges the adapter into the full-precision base instead (`full_precision`): merging
into quantised weights would round the merged weights again.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from types import MappingProxyType
from typing import Callable

from .config import RunConfig, Setting
from .errors import ConfigError, first_line
from .i18n import Msg, msg

NONE = "none"
PACKAGE = "bitsandbytes"
BLOCK, DOUBLE_QUANT_BLOCK = 64, 256  # bitsandbytes' 4-bit defaults: weights per absmax, absmaxes per scale
# bytes a frozen weight of a quantised linear layer takes (module docstring)
BYTES_PER_WEIGHT = MappingProxyType({
    "4bit": 0.5 + 1 / BLOCK + 4 / (BLOCK * DOUBLE_QUANT_BLOCK),
    "8bit": 1.0,
})
KEPT_BYTES = 4  # peft's prepare_model_for_kbit_training casts the weights it does not quantise to float32
PROBE_FEATURES = 64  # the probe layer's size: one 4-bit block per row

# transformers imports bitsandbytes whenever it is installed (every run, quantised or not). On CPUs with
# AVX-512 bf16 it then advises, as a warning, installing `kernels`, which fetches a kernel from the
# Hugging Face hub at run time; its own kernels work without it, so that advice is not shown.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def is_on(config: RunConfig) -> bool:
    return config.quantization != NONE


def full_precision(config: RunConfig) -> RunConfig:
    """`config` with the base loaded unquantised: what an export merges the adapter into."""
    return dataclasses.replace(config, **{Setting.quantization: NONE})


def compute_dtype(config: RunConfig):
    """bf16 (QLoRA's choice), or float16 where the run trains in float16 (a GPU without bf16)."""
    import torch

    from .runtime import dtype_name

    return torch.float16 if dtype_name(config.dtype) == "float16" else torch.bfloat16


def bnb_config(config: RunConfig):
    """The `BitsAndBytesConfig` for the run's `quantization`, None when it is 'none'.

    Raises the clear ConfigError of `check_available` where bitsandbytes cannot run.
    """
    if not is_on(config):
        return None
    check_available(config)
    from transformers import BitsAndBytesConfig

    if config.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype(config))


def load_arguments(config: RunConfig) -> dict:
    """Extra `from_pretrained` arguments: the quantisation config and where the weights go, or {}."""
    quantization_config = bnb_config(config)
    if quantization_config is None:
        return {}
    return {"quantization_config": quantization_config, "device_map": device_map()}


def device_map() -> dict:
    """The whole model on this process's device: its GPU (torchrun's LOCAL_RANK), else the CPU.

    A quantised model is placed while it loads; it cannot be moved with `.to()` afterwards.
    """
    import torch

    from .runtime import World

    return {"": World.from_env().local_rank if torch.cuda.is_available() else "cpu"}


# --- can bitsandbytes run here -------------------------------------------------------------------
def unavailable(mode: str, compute=None) -> Msg | None:
    """Why `mode` (8bit or 4bit, computing in `compute`: bf16 by default) cannot run here, None when it can.

    Installed is not enough: bitsandbytes imports on machines where its kernels do not run (no backend
    for this device, a CUDA build that does not match). A tiny quantised layer's forward pass is the test.
    """
    from importlib.util import find_spec

    if find_spec(PACKAGE) is None:
        return msg("hardware.bnb_missing")
    try:
        import torch

        import bitsandbytes as bnb

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if mode == "8bit":
            layer = bnb.nn.Linear8bitLt(PROBE_FEATURES, PROBE_FEATURES, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(PROBE_FEATURES, PROBE_FEATURES, compute_dtype=compute or torch.bfloat16,
                                      quant_type="nf4", compress_statistics=True)
        layer = layer.to(device)
        probe = torch.ones(1, PROBE_FEATURES, device=device)
        trained = layer(probe.requires_grad_())  # the training path
        with torch.no_grad():
            answered = layer.eval()(probe.detach())  # the inference path (chat): on CPU another kernel
        if not bool(torch.isfinite(trained).all() and torch.isfinite(answered).all()):
            return msg("hardware.bnb_backend", mode=mode, device=device, detail=msg("hardware.bnb_not_finite"))
    except Exception as exc:  # any failure of a foreign native library means: not on this machine
        return msg("hardware.bnb_backend", mode=mode, device=device_name(), detail=first_line(exc))
    return None


def device_name() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def check_available(config: RunConfig) -> None:
    """ConfigError (what, the `quantization` setting, what to do) where the run's quantisation cannot run."""
    if not is_on(config):
        return
    why = unavailable(config.quantization, compute_dtype(config))
    if why is None:
        return
    if why.key == "hardware.bnb_missing":
        fix = msg("hardware.bnb_missing_fix", command=f"{sys.executable} -m pip install '{PACKAGE}==0.50.*'")
    else:
        fix = msg("hardware.bnb_backend_fix")
    raise ConfigError(why, Setting.quantization, fix)


# --- the loaded model ----------------------------------------------------------------------------
def is_quantized(model) -> bool:
    """Whether `model` was loaded with bitsandbytes (4-bit or 8-bit)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare(model, config: RunConfig, log: Callable[[Msg], None]):
    """peft's k-bit preparation of a quantised model before LoRA, said in the log (any other model: unchanged).

    It freezes the base and casts the weights that are not quantised to float32. Gradient checkpointing
    is left to the Trainer (`activation_checkpointing`, non-reentrant, as recipe.checkpointing_decision
    decided), so a QLoRA run checkpoints exactly when a plain run would.
    """
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    mode = "4bit" if getattr(model, "is_loaded_in_4bit", False) else "8bit"
    compute = str(compute_dtype(config)).removeprefix("torch.")
    log(msg("hardware.qlora_on", mode=mode, how=msg(f"hardware.how_{mode}", compute=compute)))
    return model


# --- memory --------------------------------------------------------------------------------------
def kept_parameters(model_config) -> int:
    """Parameters quantisation leaves as they are: embeddings, an untied head, the norm weights.

    From a transformers config (decoder-only, Llama-like): two norms a layer and a final one.
    """
    vocab, hidden = model_config.vocab_size, model_config.hidden_size
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    return vocab * hidden * (1 if tied else 2) + (2 * model_config.num_hidden_layers + 1) * hidden


def frozen_weight_bytes(model_config, run_config: RunConfig, frozen: int, dtype_bytes: int) -> float:
    """Bytes the `frozen` base parameters take in this run (the formula in the module docstring)."""
    if not is_on(run_config):
        return dtype_bytes * frozen
    kept = min(kept_parameters(model_config), frozen)
    return BYTES_PER_WEIGHT[run_config.quantization] * (frozen - kept) + KEPT_BYTES * kept


def estimate_note(model_config, run_config: RunConfig, frozen: int) -> Msg | None:
    """The pre-flight's note on what quantisation does to the weights' memory, None when it is off."""
    if not is_on(run_config):
        return None
    kept = min(kept_parameters(model_config), frozen)
    return msg(f"hardware.estimate_{run_config.quantization}", quantized=frozen - kept,
               bytes=BYTES_PER_WEIGHT[run_config.quantization], kept=kept)


def export_note() -> Msg:
    """The export log's line: a QLoRA adapter is merged into the full-precision base."""
    return msg("hardware.export_full_precision")
