"""The proof every export gives: the run's probe prompts answered greedily by the studio and by the export.

For each probe prompt (the run's `probe_prompts`; a few defaults when it has none) the greedy answer
(at most MAX_NEW_TOKENS new tokens, stopped at the template's stop tokens) comes from:

- the studio: a fresh `ChatEngine` with the adapter attached, as the chat tab answers (the reference);
- merged: the merged folder loaded by plain `AutoModelForCausalLM`, its prompt rendered by the folder's
  own tokenizer and chat template, stopped by its own generation_config (so a template or stop token
  the export got wrong shows up as a difference);
- gguf: the GGUF file reloaded through transformers' GGUF loader (export_gguf.gguf_greedy);
- llama.cpp: the GGUF through llama.cpp, when llama-cpp-python is installed (export_gguf.llama_cpp_greedy);
- space: the Space's adapter attached to the local base model (its hub id stands for this folder).

The table marks, per prompt and source, whether the answer's token ids equal the studio's and, where not,
the first token that differs (`probing.first_difference`) and its text. It is written as verify.json
inside the export; `read_verify(folder)` reads it back and `verify_text(table, lang)` renders it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from .errors import StudioError
from .i18n import Msg, msg, text
from .sampling import SamplingSetting

MAX_NEW_TOKENS = 48
TOKENS_KEY = str(SamplingSetting.max_new_tokens)  # verify.json's key for MAX_NEW_TOKENS
VERIFY_FILE = "verify.json"
FALLBACK_PROBES = 3  # probes taken from config.DEFAULT_PROBES when a run has none
SOURCE_STAGES = MappingProxyType({"studio": "export.verify_studio", "merged": "export.verify_merged",
                                  "gguf": "export.verify_gguf", "llama.cpp": "export.verify_llama_cpp",
                                  "space": "export.verify_space"})


def probe_prompts(config) -> list[str]:
    from .config import DEFAULT_PROBES

    given = [p for p in config.probe_prompts if str(p).strip()]
    return given or list(DEFAULT_PROBES[:FALLBACK_PROBES])


def prove(ctx, artifact: Path) -> dict:
    """Answer every probe prompt through the studio and through the export; the table (see module doc)."""
    prompts = probe_prompts(ctx.config)
    conversations = [ctx.renderer.with_system([{"role": "user", "content": p}]) for p in prompts]
    prompt_ids = [ctx.renderer.encode_prompt(c) for c in conversations]
    base, studio = studio_answers(ctx, prompts)
    answers, extra, notes = {"studio": studio}, {}, []
    target = ctx.request.target
    if target in ("merged", "gguf", "ollama"):
        folder = Path(ctx.staging) if target == "merged" else ctx.merged()
        answers["merged"], extra["merged"] = folder_answers(ctx, folder, conversations, prompt_ids)
    if target in ("gguf", "ollama"):
        gguf_file = find_gguf(Path(ctx.staging), artifact)
        try:
            answers["gguf"] = gguf_answers(ctx, gguf_file, conversations, prompt_ids)
        except StudioError as exc:  # transformers cannot read GGUF here (gguf/accelerate missing): said, not fatal
            notes.append(msg("export.note_gguf_unchecked", reason=exc.to_msg()))
        llama = llama_cpp_answers(ctx, gguf_file, conversations, prompt_ids)
        if llama is None:
            notes.append(msg("export.note_no_llama_cpp"))
        else:
            answers["llama.cpp"] = llama
    if target == "space":
        answers["space"], hub_id = space_answers(ctx, prompt_ids)
        notes.append(msg("export.note_space_base", hub_id=hub_id or "-"))
    return build_table(ctx, prompts, prompt_ids, answers, base, extra, notes)


# --- the sources ---------------------------------------------------------------------------------
def _greedy_sampling():
    from .sampling import SamplingConfig

    return SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)


def studio_answers(ctx, prompts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(base, tuned) greedy answer ids from the studio's chat engine, as the chat tab gives them."""
    from .chat import ChatEngine

    engine = ChatEngine(ctx.workspace)
    engine.load_run(ctx.adapter, trust_remote_code=ctx.trust_remote_code)
    sampling, base, tuned = _greedy_sampling(), [], []
    for index, prompt in enumerate(prompts):
        ctx.check_stop()
        ctx.progress(SOURCE_STAGES["studio"], index, len(prompts))
        final = None
        for final in engine.compare([{"role": "user", "content": prompt}], None, sampling):
            pass
        base.append([int(i) for i in final.ids["base"]])
        tuned.append([int(i) for i in final.ids["tuned"]])
    ctx.progress(SOURCE_STAGES["studio"], len(prompts), len(prompts))
    del engine
    _release_memory()
    return base, tuned


def folder_answers(ctx, folder: Path, conversations: list, prompt_ids: list) -> tuple[list, list]:
    """Greedy ids of a merged folder as a user loads it (no peft, no remote code); and, per prompt,
    whether the folder's own template gave the studio's prompt tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .probing import greedy_ids
    from .runtime import torch_dtype

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype(ctx.config.dtype))
    model = _on_device(model)
    stops = _own_stops(model)
    answers, same_prompt = [], []
    for index, conversation in enumerate(conversations):
        ctx.check_stop()
        ctx.progress(SOURCE_STAGES["merged"], index, len(conversations))
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        same_prompt.append(list(ids) == list(prompt_ids[index]))
        answers.append(greedy_ids(model, list(ids), stops, MAX_NEW_TOKENS))
    ctx.progress(SOURCE_STAGES["merged"], len(conversations), len(conversations))
    del model
    _release_memory()
    return answers, same_prompt


def find_gguf(staging: Path, artifact: Path) -> Path:
    """The model's GGUF: the builder's artifact, else the largest .gguf (an adapter-only GGUF is smaller)."""
    if artifact.suffix == ".gguf" and artifact.is_file():
        return artifact
    found = sorted(staging.rglob("*.gguf"), key=lambda p: p.stat().st_size)
    if not found:
        from .export import ExportError

        raise ExportError(msg("export.no_gguf"), str(staging), msg("export.no_gguf_fix"))
    return found[-1]


def gguf_answers(ctx, gguf_file: Path, conversations: list, prompt_ids: list) -> list[list[int]]:
    from .export import _target_module

    module = _target_module("gguf")
    ctx.progress(SOURCE_STAGES["gguf"], 0, len(prompt_ids))
    answers = module.gguf_greedy(gguf_file, ctx, prompt_ids, max_new_tokens=MAX_NEW_TOKENS)
    ctx.progress(SOURCE_STAGES["gguf"], len(prompt_ids), len(prompt_ids))
    return [[int(i) for i in ids] for ids in answers]


def llama_cpp_answers(ctx, gguf_file: Path, conversations: list, prompt_ids: list) -> list[list[int]] | None:
    from .export import _target_module

    function = getattr(_target_module("gguf"), "llama_cpp_greedy", None)
    if function is None:
        return None
    ctx.check_stop()
    ctx.progress(SOURCE_STAGES["llama.cpp"], 0, len(prompt_ids))
    answers = function(gguf_file, ctx, prompt_ids, max_new_tokens=MAX_NEW_TOKENS)
    ctx.progress(SOURCE_STAGES["llama.cpp"], len(prompt_ids), len(prompt_ids))
    return None if answers is None else [[int(i) for i in ids] for ids in answers]


def space_answers(ctx, prompt_ids: list) -> tuple[list[list[int]], str]:
    """The Space's own adapter folder attached to the local base model; and the hub id it names."""
    from . import models
    from .export_merged import attach_adapter
    from .probing import greedy_ids

    configs = sorted(Path(ctx.staging).rglob("adapter_config.json"))
    if not configs:
        from .export import ExportError

        raise ExportError(msg("export.no_space_adapter"), str(ctx.staging), msg("export.no_space_adapter_fix"))
    adapter = configs[0].parent
    hub_id = json.loads(configs[0].read_text(encoding="utf-8")).get("base_model_name_or_path", "")
    path = models.resolve_model_path(ctx.config.model_name_or_path, ctx.workspace)
    model = attach_adapter(models.load_model(path, ctx.config, trust_remote_code=ctx.trust_remote_code), adapter)
    _plain_decoding(model)
    answers = []
    for index, ids in enumerate(prompt_ids):
        ctx.check_stop()
        ctx.progress(SOURCE_STAGES["space"], index, len(prompt_ids))
        answers.append(greedy_ids(model, ids, ctx.renderer.stop_token_ids, MAX_NEW_TOKENS))
    ctx.progress(SOURCE_STAGES["space"], len(prompt_ids), len(prompt_ids))
    del model
    _release_memory()
    return answers, hub_id


def _on_device(model):
    import torch

    model.eval()
    return model.to("cuda") if torch.cuda.is_available() else model


def _own_stops(model) -> list[int]:
    """The stop ids the model's own generation_config names; then its sampling defaults are set aside."""
    stops = getattr(model.generation_config, "eos_token_id", None)
    _plain_decoding(model)
    return [stops] if isinstance(stops, int) else [int(i) for i in stops or []]


def _plain_decoding(model) -> None:
    # transformers 5's generate() fills what a passed GenerationConfig leaves at its default from the
    # model's own (a repetition_penalty 1.1 there changes "greedy" answers): give it nothing to fill in
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()


def _release_memory() -> None:
    from .export_merged import _release_memory as release

    release()


# --- the table -----------------------------------------------------------------------------------
def build_table(ctx, prompts, prompt_ids, answers: dict, base, extra: dict, notes: list[Msg]) -> dict:
    tokenizer = ctx.renderer.tokenizer

    def token(ids, index):
        return None if index is None or index >= len(ids) else tokenizer.decode([ids[index]])

    rows = []
    for index, prompt in enumerate(prompts):
        studio = answers["studio"][index]
        row = {"prompt": prompt, "prompt_ids": list(prompt_ids[index]),
               "base": {"text": tokenizer.decode(base[index], skip_special_tokens=True), "ids": base[index]},
               "answers": {}}
        for source, lists in answers.items():
            ids = lists[index]
            diff = _first_difference(studio, ids)
            cell = {"text": tokenizer.decode(ids, skip_special_tokens=True), "ids": ids, "same": diff is None,
                    "first_difference": diff, "token": token(ids, diff), "studio_token": token(studio, diff)}
            if source in extra:
                cell["prompt_same"] = bool(extra[source][index])
            row["answers"][source] = cell
        rows.append(row)
    compared = [s for s in answers if s != "studio"]
    same = {s: sum(r["answers"][s]["same"] and r["answers"][s].get("prompt_same", True) for r in rows)
            for s in compared}
    return {"target": ctx.request.target, "run": str(ctx.request.run), "adapter": str(ctx.adapter),
            TOKENS_KEY: MAX_NEW_TOKENS, "sources": list(answers), "prompts": rows, "same": same,
            "adapter_changes": sum(r["base"]["ids"] != r["answers"]["studio"]["ids"] for r in rows),
            "verdict": "same" if all(n == len(rows) for n in same.values()) else "differs",
            "notes": [n.to_json() for n in notes]}


def _first_difference(a, b):
    from .probing import first_difference

    return first_difference(list(a), list(b))


def verdict_msg(table: dict) -> Msg:
    count = len(table["prompts"])
    sources = ", ".join(s for s in table["sources"] if s != "studio")
    if table["verdict"] == "same":
        return msg("export.verdict_same", sources=sources, count=count)
    differing = ", ".join(f"{s} {n}/{count}" for s, n in table["same"].items() if n < count)
    return msg("export.verdict_differs", sources=differing, count=count)


def verify_text(table: dict, lang: str) -> str:
    """The table for a terminal or a log, in `lang`."""
    label = {s: text(f"export.source_{s.replace('.', '_')}", lang) for s in table["sources"]}
    width = max(len(v) for v in label.values()) + 2
    lines = [text("export.verify_title", lang, count=len(table["prompts"]), tokens=table[TOKENS_KEY])]
    for number, row in enumerate(table["prompts"], start=1):
        lines.append(f"{number}. {row['prompt']}")
        for source, cell in row["answers"].items():
            name = label[source].ljust(width)
            if source == "studio":
                lines.append(f"   {name}{_one_line(cell['text'])}")
                continue
            if cell.get("prompt_same") is False:
                lines.append(f"   {name}{text('export.verify_prompt_differs', lang)}")
            if cell["same"]:
                lines.append(f"   {name}{text('export.verify_same', lang)}")
            else:
                lines.append(f"   {name}" + text("export.verify_differs", lang, index=cell["first_difference"],
                                                  token=_shown(cell["token"], lang),
                                                  studio=_shown(cell["studio_token"], lang)))
                lines.append(f"   {' ' * width}{_one_line(cell['text'])}")
    for note in table.get("notes", []):
        lines.append(Msg.from_json(note).render(lang))
    lines.append(text("export.adapter_changes", lang, changed=table["adapter_changes"], count=len(table["prompts"])))
    lines.append(verdict_msg(table).render(lang))
    return "\n".join(lines)


def _one_line(answer: str) -> str:
    return answer.replace("\n", "\\n") if answer else "∅"


def _shown(token: str | None, lang: str) -> str:
    return text("export.verify_end", lang) if token is None else repr(token)


def write_verify(table: dict, folder: Path) -> Path:
    from .files import write_text_atomic

    return write_text_atomic(Path(folder) / VERIFY_FILE, json.dumps(table, ensure_ascii=False, indent=1) + "\n")


def read_verify(folder: Path) -> dict:
    """The proof table an export wrote; an ExportError when the folder has none (not an export, or torn)."""
    from .errors import first_line
    from .export import ExportError

    file = Path(folder) / VERIFY_FILE
    try:
        table = json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        raise ExportError(msg("export.no_verify"), str(file), msg("export.no_verify_fix")) from None
    except ValueError as exc:
        raise ExportError(msg("export.bad_verify", detail=first_line(exc)), str(file),
                          msg("export.no_verify_fix")) from None
    if not isinstance(table, dict) or "prompts" not in table:
        raise ExportError(msg("export.bad_verify", detail="prompts"), str(file), msg("export.no_verify_fix"))
    return table
