"""The merged export: the base model with the run's LoRA folded into its weights, loadable without peft.

`build_merged(ctx)` writes the export into `ctx.staging`; `merged_scratch(ctx)` builds the same folder
once into a scratch folder beside it, for the GGUF converter to read. The folder holds:

- `model.safetensors` (or safetensors shards; never pickles), in the dtype the studio's chat runs the run in; an Index model
  is written as plain Llama (`LlamaForCausalLM`, model_type llama, its head rows already L2-normalised
  by the native load, no norm_head key, no auto_map), so it needs no remote code;
- the tokenizer with the chat template the run was trained and chatted with, in `chat_template.jinja`
  and in tokenizer_config.json (older readers and llama.cpp's converter look there). Template switches
  (`chat_template_kwargs`, e.g. enable_thinking false) become the template's defaults, so a plain
  `apply_chat_template` renders what training did; a SentencePiece `tokenizer.model` is copied along;
- `generation_config.json`: the base model's, its eos ids the template's stop tokens;
- a model card, README.md (export_card.py).
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from .i18n import msg

MERGED_STAGE = "export.stage_merge"
MERGE_STEPS = 4  # load, merge, save weights, tokenizer and card


def build_merged(ctx) -> Path:
    """The merged model, written into `ctx.staging`; returns its weights file (or the shards' index)."""
    return write_merged(ctx, Path(ctx.staging), card=True)


def merged_scratch(ctx) -> Path:
    """The merged model in a scratch folder beside the staging one (the job removes it); its folder."""
    folder = Path(ctx.staging).with_name(Path(ctx.staging).name + "-merged")
    if folder.exists():
        shutil.rmtree(folder)
    write_merged(ctx, folder, card=False)
    return folder


def write_merged(ctx, folder: Path, card: bool) -> Path:
    from . import models

    folder.mkdir(parents=True, exist_ok=True)
    ctx.progress(MERGED_STAGE, 0, MERGE_STEPS)
    from . import quantization

    path = models.resolve_model_path(ctx.config.model_name_or_path, ctx.workspace)
    if quantization.is_on(ctx.config):  # a QLoRA adapter is merged into the full-precision base
        ctx.log(quantization.export_note())
    model = models.load_model(path, quantization.full_precision(ctx.config), trust_remote_code=ctx.trust_remote_code)
    ctx.check_stop()
    ctx.progress(MERGED_STAGE, 1, MERGE_STEPS)
    model = merge_adapter(model, ctx.adapter)
    ctx.check_stop()
    ctx.progress(MERGED_STAGE, 2, MERGE_STEPS)
    save_model(model, folder)
    write_generation_config(model, ctx.renderer, folder)
    del model
    _release_memory()
    ctx.check_stop()
    ctx.progress(MERGED_STAGE, 3, MERGE_STEPS)
    write_tokenizer(ctx.renderer, path, folder)
    if card:
        from .export_card import write_card

        write_card(ctx, folder)
    ctx.progress(MERGED_STAGE, MERGE_STEPS, MERGE_STEPS)
    ctx.log(msg("export.merged_written"))
    weights = [folder / n for n in ("model.safetensors", "model.safetensors.index.json") if (folder / n).exists()]
    return weights[0] if weights else folder  # a large model is saved in shards, listed by the index


def merge_adapter(model, adapter: Path):
    """The base model with the adapter's LoRA weights added into its own (peft's merge_and_unload)."""
    merged = attach_adapter(model, adapter).merge_and_unload()
    merged.eval()
    return merged


def attach_adapter(model, adapter: Path):
    """`model` with the adapter folder attached (a PeftModel); a mismatch is the chat's clear message."""
    from peft import PeftModel

    from . import pickles
    from .errors import ModelError, first_line

    try:
        with pickles.explained(adapter, "adapter"):
            tuned = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(msg("chat.adapter_mismatch", detail=first_line(exc)), str(adapter),
                         msg("chat.adapter_mismatch_fix")) from None
    tuned.eval()
    return tuned


def save_model(model, folder: Path) -> None:
    """safetensors weights and config.json, without transformers' progress bar (it tears our lines)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(folder))
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    for stray in folder.glob("*.bin"):  # never pickles beside the weights
        stray.unlink()


def write_generation_config(model, renderer, folder: Path) -> None:
    """generation_config.json: the base model's own, stopping on the template's stop tokens (and padding)."""
    from transformers import GenerationConfig

    stops = [int(i) for i in renderer.stop_token_ids]
    pad = renderer.tokenizer.pad_token_id
    config = GenerationConfig.from_dict(model.generation_config.to_dict()) if model.generation_config is not None \
        else GenerationConfig()
    config.eos_token_id = stops
    config.pad_token_id = pad if pad is not None else stops[0]
    if getattr(config, "bos_token_id", None) is None:
        config.bos_token_id = getattr(model.config, "bos_token_id", None)
    config.save_pretrained(str(folder))


def write_tokenizer(renderer, base_path: Path, folder: Path) -> None:
    """The tokenizer and its chat template (with the run's switches as defaults), self-described."""
    tokenizer = renderer.tokenizer
    template = template_with_defaults(renderer.chat_template, renderer.template_kwargs)
    with _chat_template(tokenizer, template):
        tokenizer.save_pretrained(str(folder))
    config_file = folder / "tokenizer_config.json"
    values = json.loads(config_file.read_text(encoding="utf-8"))
    values["chat_template"] = template
    if "added_tokens_decoder" not in values:
        # transformers 5 no longer writes it; without it llama.cpp's converter takes an added token such
        # as Index's reserved_0 for plain text and splits it into letters in every prompt
        values["added_tokens_decoder"] = {
            str(index): {"content": token.content, "lstrip": token.lstrip, "rstrip": token.rstrip,
                         "normalized": token.normalized, "single_word": token.single_word, "special": True}
            for index, token in sorted(getattr(tokenizer, "added_tokens_decoder", {}).items())}
    config_file.write_text(json.dumps(values, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    sentencepiece = Path(base_path) / "tokenizer.model"
    if sentencepiece.is_file() and not (folder / "tokenizer.model").exists():
        shutil.copyfile(sentencepiece, folder / "tokenizer.model")  # llama.cpp's SentencePiece path reads it


def template_with_defaults(template: str, switches) -> str:
    """`template` that sets each switch to the run's value unless the caller passes it (Jinja `set`)."""
    lines = []
    for name, value in dict(switches or {}).items():
        literal = _jinja_literal(value)
        if name.isidentifier() and literal is not None:
            lines.append(f"{{%- if {name} is not defined -%}}{{%- set {name} = {literal} -%}}{{%- endif -%}}")
    return "".join(lines) + template


def _jinja_literal(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float, str)):
        return json.dumps(value, ensure_ascii=False)
    return None  # lists and mappings stay recorded in export.json only


@contextmanager
def _chat_template(tokenizer, template: str):
    saved = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        yield
    finally:
        tokenizer.chat_template = saved


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def merged_bytes(ctx) -> tuple[int, int]:
    """(parameters, bytes of the merged weights) of the run's base model, from its config on the meta device."""
    import torch

    from .errors import StudioError
    from .estimate import meta_model
    from .models import read_model_config, resolve_model_path
    from .runtime import torch_dtype

    weight_bytes = torch.tensor([], dtype=torch_dtype(ctx.config.dtype)).element_size()
    path = resolve_model_path(ctx.config.model_name_or_path, ctx.workspace)
    try:
        params = meta_model(read_model_config(path)).num_parameters()
    except (StudioError, ValueError, KeyError, TypeError, OSError):  # a model only its own code builds
        params = sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin")) // 2
    return params, params * weight_bytes
