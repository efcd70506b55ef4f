"""The Ollama export: the run's GGUF with a Modelfile that formats and samples the way the studio does.

`build_ollama(ctx)` asks `export_gguf.build_gguf(ctx)` for the model file, then writes beside it:

- `Modelfile`: `FROM ./<gguf>`, a `TEMPLATE` derived from the run's chat template (ollama_template.py),
  one `PARAMETER stop` per stop token of the template, `SYSTEM` with the persona prompt, and the run's
  sampling as PARAMETERs (temperature, top_p, top_k, repeat_penalty over the whole context as
  transformers applies it, num_predict, seed);
- `commands.txt`: the `ollama create` command to run in the folder (and `ollama run` after it);
- `template_check.json`: sample conversations rendered by the TEMPLATE (Python evaluator, and Go's own
  text/template when Go is installed) against the chat template; a difference stops the export. It
  also records what Ollama would still do differently from training, read from the GGUF: a BOS token
  Ollama adds that the template never wrote, special tokens the GGUF types so that Ollama tokenises
  their text as plain text, a template that strips contents; each is logged and said in the README;
- `README.md`: what the folder holds and how to use it, in Chinese and English.

The sampling is the run's saved chat sampling (`sampling.yaml` in the run folder, SamplingConfig keys)
when it has one, else SamplingConfig's defaults. Modelfile values are not escaped by Ollama's parser
(parser/parser.go): a persona prompt containing three double quotes, or characters its parser drops,
is refused with a message instead of being written wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .chat import ZHEN_HUAN_SYSTEM_PROMPT
from .config import DEFAULT_PROBES
from .export import ExportError
from .files import write_text_atomic
from .i18n import msg, text
from .ollama_template import check, derive, go_template, sample_conversations
from .sampling import SamplingConfig, SamplingSetting, sampling_from_dict

MODELFILE = "Modelfile"
COMMANDS_FILE = "commands.txt"
CHECK_FILE = "template_check.json"
README_FILE = "README.md"
SAMPLING_FILE = "sampling.yaml"      # a run's saved chat sampling, SamplingConfig keys
SAMPLE_ANSWERS = ("臣妾在。", "Fine, thank you.")  # answers between the sample turns of the template check
LANGS = ("zh", "en")


def run_sampling(run_dir: Path | None) -> SamplingConfig:
    """The run's saved chat sampling, or the chat defaults."""
    import yaml

    file = Path(run_dir) / SAMPLING_FILE if run_dir else None
    if file is None or not file.is_file():
        return SamplingConfig()
    values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    return sampling_from_dict(values, str(file))


def gguf_facts(gguf_file: Path) -> tuple[bool, dict[str, int]]:
    """(whether Ollama puts a BOS token first, the GGUF's token -> token type).

    Ollama adds the BOS when `tokenizer.ggml.add_bos_token` says so, and when the key is missing
    (its model loaders default it to true). Its tokenizer reads a token written as text in the prompt
    as that token only when the token's type is control (3) or user-defined (4).
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    field = reader.get_field("tokenizer.ggml.add_bos_token")
    tokens, types = reader.get_field("tokenizer.ggml.tokens"), reader.get_field("tokenizer.ggml.token_type")
    kinds = dict(zip(tokens.contents(), types.contents())) if tokens is not None and types is not None else {}
    return (True if field is None else bool(field.contents())), kinds


def tokens_read_as_text(glue, renderer, kinds: dict[str, int]) -> list[str]:
    """Special tokens the TEMPLATE writes that Ollama would tokenise as plain text (see gguf_facts)."""
    written = "".join((glue.opening, glue.system_before, glue.system_after, glue.to_answer, glue.to_user,
                       glue.generation))
    tokenizer = renderer.tokenizer
    special = set(tokenizer.all_special_tokens) | {t.content for t in getattr(tokenizer, "added_tokens_decoder",
                                                                               {}).values()}
    return sorted(t for t in special if t and t in written and t in kinds and kinds[t] not in (3, 4))


def model_name(ctx) -> str:
    """The name for `ollama create`: the run's name in the characters Ollama accepts."""
    raw = ctx.config.run_name or Path(ctx.request.run).name
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._") or "lora-studio"


def stop_texts(renderer) -> list[str]:
    """The template's stop tokens as text (the end-of-turn token and the EOS)."""
    tokens = renderer.tokenizer.convert_ids_to_tokens(list(renderer.stop_token_ids))
    return list(dict.fromkeys(tokens))


def _value(value: str, what: str) -> str:
    """`value` for a Modelfile line, refused when Ollama's parser would not read it back as it is."""
    bad = '"""' in value or any(not (c.isprintable() or c in "\n\t") for c in value)
    if bad:
        raise ExportError(msg("ollama.unwritable_value", what=what), MODELFILE, msg("ollama.unwritable_value_fix"))
    return value


def sampling_parameters(sampling: SamplingConfig) -> list[tuple[str, str]]:
    """(Ollama parameter, value) for the run's sampling; transformers penalises the whole context (-1)."""
    return [(str(SamplingSetting.temperature), f"{sampling.temperature:g}"),
            (str(SamplingSetting.top_p), f"{sampling.top_p:g}"),
            (str(SamplingSetting.top_k), str(sampling.top_k)),
            ("repeat_penalty", f"{sampling.repetition_penalty:g}"),
            ("repeat_last_n", "-1"),
            ("num_predict", str(sampling.max_new_tokens)),
            (str(SamplingSetting.seed), str(sampling.seed))]


def modelfile_text(gguf_name: str, template: str, stops: list[str], system_prompt: str,
                   sampling: SamplingConfig) -> str:
    lines = [f"# {text('ollama.modelfile_comment', lang)}" for lang in LANGS]
    lines += [f"FROM ./{gguf_name}", "", f'TEMPLATE """{_value(template, "TEMPLATE")}"""', ""]
    lines += [f'PARAMETER stop "{_value(stop, "PARAMETER stop")}"' for stop in stops]
    lines += [f"PARAMETER {name} {value}" for name, value in sampling_parameters(sampling)]
    if system_prompt:
        lines += ["", f'SYSTEM """{_value(system_prompt, "SYSTEM")}"""']
    return "\n".join(lines) + "\n"


def commands(name: str) -> list[str]:
    return [f"ollama create {name} -f {MODELFILE}", f"ollama run {name}"]


def create_command(out_dir: Path) -> str:
    """The `ollama create` line of a finished Ollama export (what the CLI and the Export tab show)."""
    return (Path(out_dir) / COMMANDS_FILE).read_text(encoding="utf-8").splitlines()[0]


def _notes(warnings: dict) -> list:
    """The messages for what Ollama will do differently from training, if anything."""
    notes = [msg("ollama.bos_added")] if warnings["bos_added_by_ollama_only"] else []
    if warnings["tokens_read_as_text"]:
        notes.append(msg("ollama.tokens_as_text", tokens=" ".join(warnings["tokens_read_as_text"])))
    if warnings["template_trims_contents"]:
        notes.append(msg("ollama.trims_contents"))
    return notes


def _readme(name: str, gguf_name: str, checked, notes: list) -> str:
    go = checked.go_equal if checked.go_equal is not None else "-"
    parts = []
    for lang in LANGS:
        parts += [f"# {text('ollama.readme_title', lang, name=name)}", "",
                  text("ollama.readme_intro", lang, gguf=gguf_name, modelfile=MODELFILE), "",
                  "```sh", *commands(name), "```", "",
                  text("ollama.readme_check", lang, cases=checked.cases, python=checked.python_equal, go=go,
                       file=CHECK_FILE), ""]
        parts += [note.render(lang) + "\n" for note in notes]
    return "\n".join(parts)


def build_ollama(ctx) -> Path:
    """Build the GGUF, then write the Modelfile, the commands, the template check and the README."""
    from .export_gguf import build_gguf

    gguf_file = Path(build_gguf(ctx))
    ctx.check_stop()
    ctx.progress("ollama.stage_modelfile", 0, 1)
    renderer = ctx.renderer
    adds_bos, kinds = gguf_facts(gguf_file)
    glue = derive(renderer, adds_bos)
    source = go_template(glue)
    users = list(ctx.config.probe_prompts or ()) or list(DEFAULT_PROBES[:3])
    systems = list(dict.fromkeys(["", renderer.system_prompt or ZHEN_HUAN_SYSTEM_PROMPT]))
    checked = check(source, glue, renderer, sample_conversations(users, list(SAMPLE_ANSWERS)), systems)
    warnings = {"bos_added_by_ollama_only": adds_bos and not glue.bos,
                "tokens_read_as_text": tokens_read_as_text(glue, renderer, kinds),
                "template_trims_contents": glue.trims}
    staging = Path(ctx.staging)
    write_text_atomic(staging / CHECK_FILE,
                      json.dumps({**checked.to_json(), **warnings}, ensure_ascii=False, indent=2) + "\n")
    if not checked.passed:
        raise ExportError(msg("ollama.template_mismatch", detail=checked.first_difference[:300]),
                          str(staging / CHECK_FILE), msg("ollama.template_unexpressible_fix"))
    for note in _notes(warnings):
        ctx.log(note)
    name = model_name(ctx)
    sampling = run_sampling(getattr(ctx.request, "run", None))
    modelfile = staging / MODELFILE
    write_text_atomic(modelfile, modelfile_text(gguf_file.name, source, stop_texts(renderer),
                                                renderer.system_prompt, sampling))
    write_text_atomic(staging / COMMANDS_FILE, "\n".join(commands(name)) + "\n")
    write_text_atomic(staging / README_FILE, _readme(name, gguf_file.name, checked, _notes(warnings)))
    ctx.log(msg("ollama.template_checked", cases=checked.cases, python=checked.python_equal,
                go=checked.go_equal if checked.go_equal is not None else "-"))
    ctx.log(msg("ollama.create_command", command=commands(name)[0]))
    ctx.progress("ollama.stage_modelfile", 1, 1)
    return modelfile
