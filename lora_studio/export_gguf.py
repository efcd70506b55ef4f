"""The GGUF export: the merged model through llama.cpp's own converter, and the adapter as a GGUF LoRA.

`build_gguf(ctx)` converts `ctx.merged()` (a plain Hugging Face folder; an Index model arrives there as
plain Llama) with llama.cpp's `convert_hf_to_gguf.py` into `ctx.staging/<run>-<quant>.gguf`:

- f16, bf16 and q8_0 come straight from the converter (`--outtype`); the other QUANTS are made from
  an f16 GGUF by llama.cpp's quantizer (llama-cpp-python's `llama_model_quantize`), when installed;
- the architecture is checked against the converter's own list before anything runs, and the
  converter's known failures (an unknown BPE pre-tokenizer, an unsupported model, a full disk) become
  messages; its whole output is kept in `ctx.staging/llama-cpp.log`;
- LoRA Studio's demo model has a tokenizer llama.cpp cannot know by its hash (it was trained here); it
  splits text exactly as GPT-2 does, so only for it, and only once its tokenizer.json proves that, the
  converter is told to write the "gpt-2" pre-tokenizer (llama_cpp.run_converters' `gpt2_pre`);
- beside the model, ADAPTER_FILE is the adapter alone as a GGUF LoRA (`convert_lora_to_gguf.py`, in the
  same child process), which llama.cpp and Ollama (`ADAPTER`) apply over a GGUF of any copy of the base
  model; an rsLoRA adapter gets the alpha that gives llama.cpp's alpha / r the same scale.

Files are written under temporary names and renamed when whole. `gguf_greedy` and `llama_cpp_greedy`
answer prompts greedily from a GGUF for the export's proof (export_verify.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import llama_cpp
from .config import Setting
from .export import ExportError
from .i18n import msg

CONVERTER_QUANTS = ("f16", "bf16", "q8_0")
QUANTS = CONVERTER_QUANTS + tuple(llama_cpp.QUANTIZER_TYPES)
ADAPTER_FILE = "adapter-f16.gguf"
LOG_FILE = "llama-cpp.log"
STAGE_CONVERT, STAGE_QUANTIZE, STAGE_ADAPTER = "gguf.stage_convert", "gguf.stage_quantize", "gguf.stage_adapter"
# Families to name when an architecture is not supported (the converter knows hundreds more).
COMMON_FAMILIES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
                   "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM", "InternLM2ForCausalLM",
                   "BaichuanForCausalLM", "ChatGLMModel", "DeepseekV2ForCausalLM", "MiniCPMForCausalLM")


def check_quant(quant: str) -> str:
    quant = (quant or "").strip().lower()
    if quant not in QUANTS:
        raise ExportError(msg("gguf.unknown_quant", quant=quant), "--quant",
                          msg("gguf.unknown_quant_fix", known=", ".join(QUANTS)))
    return quant


def gguf_name(ctx, quant: str) -> str:
    name = re.sub(r"[^\w.\-]+", "-", Path(str(ctx.request.run)).name).strip(".-") or "model"
    return f"{name}-{quant}.gguf"


def build_gguf(ctx) -> Path:
    """The run as one GGUF file in `ctx.staging` (and the adapter as ADAPTER_FILE); returns the model file."""
    quant = check_quant(ctx.request.quant)
    converter = llama_cpp.find_converter(ctx.workspace, ctx.request.llama_cpp)
    if quant not in CONVERTER_QUANTS:
        llama_cpp.require_quantizer(quant)  # before minutes of merging and converting, not after
    staging = Path(ctx.staging)
    merged = ctx.merged()
    check_architecture(converter, merged)
    ctx.log(msg("gguf.converting", converter=converter.describe(), quant=quant))
    target = staging / gguf_name(ctx, quant)
    outtype = quant if quant in CONVERTER_QUANTS else "f16"
    converted = _part(staging / gguf_name(ctx, outtype))
    jobs = [(llama_cpp.CONVERT_HF, ["--outtype", outtype, "--outfile", str(converted), str(merged)])]
    adapter = adapter_job(ctx, merged)
    try:
        _convert(ctx, converter, jobs + ([adapter.job] if adapter else []), is_studio_tokenizer(ctx, merged))
        check_output(converted, llama_cpp.CONVERT_HF, staging / LOG_FILE)
        if adapter:
            check_output(adapter.part, llama_cpp.CONVERT_LORA, staging / LOG_FILE)
        if quant in CONVERTER_QUANTS:
            os.replace(converted, target)
        else:
            _quantize(ctx, converted, target, quant)
        ctx.log(msg("gguf.written", path=str(target), size=_size(target)))
        if adapter:
            os.replace(adapter.part, staging / ADAPTER_FILE)
            ctx.log(msg("gguf.adapter_written", path=str(staging / ADAPTER_FILE), size=_size(staging / ADAPTER_FILE)))
    finally:
        converted.unlink(missing_ok=True)
        if adapter:
            adapter.clean_up()
    return target


def check_architecture(converter, model_folder: Path) -> str:
    """The folder's architecture, once the converter is known to support it; else a message naming both."""
    architecture = llama_cpp.model_architecture(model_folder)
    supported = llama_cpp.supported_architectures(converter)
    if architecture not in supported:
        families = [name for name in COMMON_FAMILIES if name in supported]
        raise ExportError(msg("gguf.unsupported_architecture", architecture=architecture or "?"),
                          str(Path(model_folder) / "config.json"),
                          msg("gguf.unsupported_architecture_fix", families=", ".join(families),
                              count=len(supported), converter=converter.describe()))
    return architecture


def is_studio_tokenizer(ctx, merged: Path) -> bool:
    """Whether the run's base is LoRA Studio's own demo model (marked by its build file) and its
    tokenizer.json splits text as GPT-2's pre-tokenizer does (llama_cpp.is_gpt2_byte_level)."""
    from .demo_model import BUILD_FILE
    from .models import DEMO_MODEL

    name = str(ctx.config.model_name_or_path or DEMO_MODEL)
    built_here = name == DEMO_MODEL or (Path(name).expanduser() / BUILD_FILE).is_file()
    return built_here and llama_cpp.is_gpt2_byte_level(Path(merged) / "tokenizer.json")


@dataclass
class AdapterJob:
    """convert_lora_to_gguf.py's run for ADAPTER_FILE, written first as `part`."""
    job: tuple[str, list[str]]
    part: Path
    source: Path
    scratch: Path | None

    def clean_up(self) -> None:
        self.part.unlink(missing_ok=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def adapter_job(ctx, merged: Path) -> AdapterJob | None:
    """How to write the adapter as a GGUF LoRA; None (and a log line) when llama.cpp cannot apply it
    (DoRA, per-module ranks). `--base` reads only config.json: the merged folder has the base's shape
    (an Index base as Llama)."""
    settings = json.loads((Path(ctx.adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    if settings.get(Setting.use_dora) or settings.get("rank_pattern") or settings.get("alpha_pattern"):
        ctx.log(msg("gguf.adapter_skipped"))
        return None
    staging = Path(ctx.staging)
    scratch = staging / ".adapter-rslora"
    source = _adapter_for_llama_cpp(Path(ctx.adapter), settings, scratch)
    part = _part(staging / ADAPTER_FILE)
    job = (llama_cpp.CONVERT_LORA, ["--outtype", "f16", "--base", str(merged), "--outfile", str(part), str(source)])
    return AdapterJob(job, part, source, scratch if source == scratch else None)


def _adapter_for_llama_cpp(adapter: Path, settings: dict, scratch: Path) -> Path:
    """The adapter folder to convert. llama.cpp scales a LoRA by alpha / r; an rsLoRA one is scaled by
    alpha / sqrt(r), so it gets a copy whose alpha gives llama.cpp the same scale."""
    if not settings.get(Setting.use_rslora):
        return adapter
    scratch.mkdir(parents=True, exist_ok=True)
    rank = float(settings[Setting.r])
    changed = dict(settings)
    changed[Setting.use_rslora] = False
    changed[Setting.lora_alpha] = float(settings[Setting.lora_alpha]) * math.sqrt(rank)
    (scratch / "adapter_config.json").write_text(json.dumps(changed, indent=2), encoding="utf-8")
    shutil.copyfile(adapter / "adapter_model.safetensors", scratch / "adapter_model.safetensors")
    return scratch


def _convert(ctx, converter, jobs: list, gpt2_pre: bool) -> None:
    stages = {llama_cpp.CONVERT_HF: STAGE_CONVERT, llama_cpp.CONVERT_LORA: STAGE_ADAPTER}
    ctx.progress(STAGE_CONVERT, 0, 100)
    outcome = llama_cpp.run_converters(converter, jobs, Path(ctx.staging) / LOG_FILE, ctx.check_stop,
                                       lambda script, done, total: ctx.progress(stages.get(script, STAGE_CONVERT), done, total),
                                       gpt2_pre=gpt2_pre)
    if outcome.returncode != 0:
        raise converter_failure(outcome, outcome.script)
    for script, _args in jobs:
        ctx.progress(stages[script], 100, 100)


def _quantize(ctx, source: Path, target: Path, quant: str) -> None:
    ctx.progress(STAGE_QUANTIZE, 0, 1)
    part = _part(target)
    try:
        outcome = llama_cpp.quantize(source, part, quant, Path(ctx.staging) / LOG_FILE, ctx.check_stop)
        if outcome.returncode != 0 or not part.is_file():
            raise converter_failure(outcome, "llama_model_quantize")
        check_output(part, "llama_model_quantize", outcome.log_file)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    ctx.progress(STAGE_QUANTIZE, 1, 1)


def check_output(gguf_file: Path, script: str, log_file: Path) -> None:
    """A GGUF header (magic, version, tensor count) with tensors in it: a converter that found no
    weights (a folder without its safetensors) still exits 0, with a file that holds no model."""
    try:
        with open(gguf_file, "rb") as handle:
            header = handle.read(16)
    except OSError:
        header = b""
    tensors = int.from_bytes(header[8:16], "little") if len(header) == 16 else 0
    if header[:4] != b"GGUF" or tensors == 0:
        raise ExportError(msg("gguf.empty_output", script=script), str(log_file), msg("gguf.empty_output_fix"))


def converter_failure(outcome, script: str) -> ExportError:
    """What the converter's output says went wrong, as a message; the last lines and the log go with it."""
    text = "\n".join(outcome.tail)
    where = str(outcome.log_file)
    lower = text.lower()
    if "bpe pre-tokenizer was not recognized" in lower:
        found = re.search(r"chkhsh:\s+([0-9a-f]{64})", _read(outcome.log_file))
        return ExportError(msg("gguf.unknown_pretokenizer", hash=found.group(1) if found else "?"), where,
                           msg("gguf.unknown_pretokenizer_fix"))
    unsupported = re.search(r"Model (\S+) is not supported|Architecture '([^']+)' not supported", text)
    if unsupported:
        return ExportError(msg("gguf.unsupported_architecture", architecture=unsupported.group(1) or unsupported.group(2)),
                           where, msg("gguf.converter_unsupported_fix"))
    if any(word in lower for word in ("no space left on device", "os error 28", "disk quota exceeded")):
        return ExportError(msg("gguf.disk_full"), where, msg("gguf.disk_full_fix"))
    missing = re.search(r"No module named '([^']+)'", text)
    if missing:
        return ExportError(msg("gguf.missing_module", module=missing.group(1)), where,
                           msg("gguf.missing_module_fix", module=missing.group(1).split(".")[0]))
    if "embeddings is present in the adapter" in lower:
        return ExportError(msg("gguf.adapter_embeddings"), where, msg("gguf.adapter_embeddings_fix"))
    return ExportError(msg("gguf.converter_failed", script=script, code=outcome.returncode), where,
                       msg("gguf.converter_failed_fix", tail=text))


# --- answering from a GGUF -----------------------------------------------------------------------
def rendered_prompts(ctx, prompts) -> list[tuple[list[int], str | None]]:
    """(ids, text) of each prompt through the run's own renderer. A prompt is a user turn (a text), a
    conversation (a list of messages) or ids already; ids have no text (None), so no tokenizer check."""
    out = []
    for prompt in prompts:
        if isinstance(prompt, (list, tuple)) and all(isinstance(i, int) for i in prompt):
            out.append(([int(i) for i in prompt], None))
            continue
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = ctx.renderer.render_text(ctx.renderer.with_system(messages), add_generation_prompt=True)
        out.append((ctx.renderer.encode_prompt(messages), text))
    return out


def gguf_greedy(gguf_file: Path, ctx, prompts, max_new_tokens: int = 64, check_tokenizer: bool = True) -> list[list[int]]:
    """Greedy answers (token ids) of the GGUF reloaded by transformers' GGUF loader.

    `prompts` are user turns (texts), conversations or prompt ids (rendered_prompts). They are tokenised
    by the run's renderer, not by the GGUF's tokenizer, so the GGUF gets the studio's ids; for texts and
    conversations `check_tokenizer` also asks whether the GGUF's own tokenizer encodes the rendered
    prompt alike, and logs when it does not.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from .probing import greedy_ids

    require_gguf_loader()
    gguf_file = Path(gguf_file)
    rendered = rendered_prompts(ctx, prompts)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
    model.eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    _plain_decoding(model)
    answers = []
    for ids, _text in rendered:
        ctx.check_stop()
        answers.append(greedy_ids(model, ids, ctx.renderer.stop_token_ids, max_new_tokens))
    del model
    if check_tokenizer and any(text is not None for _ids, text in rendered):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        report_tokenizer(ctx, "transformers", rendered,
                         lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    return answers


def report_tokenizer(ctx, reader: str, rendered, encode) -> list[int]:
    """Indices of the prompts whose text `encode` (the GGUF's own tokenizer, as `reader` reads it) turns
    into other ids than the run's renderer did; a log line says how many."""
    differing = [index for index, (ids, text) in enumerate(rendered) if text is not None and encode(text) != ids]
    if differing:
        ctx.log(msg("gguf.tokenizer_differs", reader=reader, count=len(differing),
                    total=sum(text is not None for _ids, text in rendered), first=differing[0] + 1))
    return differing


def llama_cpp_greedy(gguf_file: Path, ctx, prompts, max_new_tokens: int = 64) -> list[list[int]] | None:
    """Greedy answers through llama.cpp itself (llama-cpp-python), same prompt ids; None when not installed."""
    if not llama_cpp.quantizer_available():
        return None
    from llama_cpp import Llama

    rendered = rendered_prompts(ctx, prompts)
    stops = {int(i) for i in ctx.renderer.stop_token_ids}
    model = Llama(model_path=str(gguf_file), n_ctx=max(len(ids) for ids, _ in rendered) + max_new_tokens + 8,
                  seed=0, verbose=False)
    answers = []
    for ids, _text in rendered:
        ctx.check_stop()
        answer = []
        for token in model.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if int(token) in stops or len(answer) >= max_new_tokens:
                break
            answer.append(int(token))
        answers.append(answer)
    report_tokenizer(ctx, "llama.cpp", rendered,
                     lambda text: model.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    model.close()
    return answers


def require_gguf_loader() -> None:
    """transformers reads GGUF only with the `gguf` and `accelerate` packages installed."""
    import importlib.util

    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(msg("gguf.loader_needs", packages=", ".join(missing)), "transformers",
                          msg("gguf.loader_needs_fix", packages=" ".join(missing)))


def _plain_decoding(model) -> None:
    # generate() fills what a passed GenerationConfig leaves unset from the model's own: give it nothing
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()


def _part(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def _size(path: Path) -> str:
    from .hub_local import format_bytes

    return format_bytes(path.stat().st_size)


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
