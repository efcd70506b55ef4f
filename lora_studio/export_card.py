"""The model card (README.md) of a merged export, for the Hugging Face Hub and ModelScope.

Written in English with a Chinese section, both from the catalogue: the base model and its licence (the
model catalogue's words where the model is in it), each dataset file with its sha256, the chat format
(template, switches, stop tokens, system prompt), the run's settings as YAML, how to load it, the export
date and the LoRA Studio version. Dataset files are named by file name only: a card meant for a hub
never carries the exporting machine's folders.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .i18n import text

CARD_LANGUAGES = ("en", "zh")


def write_card(ctx, folder: Path) -> Path:
    from .files import write_text_atomic

    return write_text_atomic(Path(folder) / "README.md", model_card(ctx))


def model_card(ctx) -> str:
    from . import __version__

    config, renderer = ctx.config, ctx.renderer
    entry = catalog_entry(config.model_name_or_path)
    hub_id = entry.huggingface_id if entry is not None else ""
    files = [(Path(f).name, file_sha256(Path(f))) for f in config.data_files]
    facts = {"run": Path(ctx.request.run).name, "base": base_name(config.model_name_or_path, entry),
             "version": __version__, "date": time.strftime("%Y-%m-%d"),
             "stops": ", ".join(f"{i} {renderer.tokenizer.convert_ids_to_tokens(i)!r}" for i in renderer.stop_token_ids),
             "switches": json.dumps(dict(renderer.template_kwargs), ensure_ascii=False) if renderer.template_kwargs
             else "-"}
    header = ["---", *([f"base_model: {hub_id}"] if hub_id else []), "library_name: transformers",
              "tags:", "- lora-studio", "- lora", "- merged", "---", "",
              f"# {Path(ctx.request.run).name}-merged", ""]
    sections = [_section(lang, entry, files, facts, renderer.system_prompt) for lang in CARD_LANGUAGES]
    settings = ["## " + text("export.card_settings", "en") + " / " + text("export.card_settings", "zh"), "",
                "```yaml", _settings_yaml(config, facts["base"]).rstrip(), "```", ""]
    usage = ["## " + text("export.card_usage", "en") + " / " + text("export.card_usage", "zh"), "",
             "```python", *USAGE.strip().splitlines(), "```", ""]
    return "\n".join([*header, *sections[0], *sections[1], *settings, *usage])


USAGE = """
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
messages = [{"role": "user", "content": "你是谁？"}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids)  # generation_config.json: stops at the chat template's end of turn
print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
"""


def _section(lang: str, entry, files: list[tuple[str, str]], facts: dict, system_prompt: str) -> list[str]:
    licence = entry.licence_text(lang) if entry is not None else text("export.card_licence_unknown", lang)
    lines = ["## " + text("export.card_english" if lang == "en" else "export.card_chinese", lang), ""]
    lines += [text("export.card_intro", lang, **facts), "",
              "### " + text("export.card_base", lang), "",
              "- " + text("export.card_base_model", lang, base=facts["base"]),
              "- " + text("export.card_licence", lang, licence=licence), "",
              "### " + text("export.card_data", lang), "",
              f"| {text('export.card_file', lang)} | SHA-256 |", "|---|---|"]
    lines += [f"| {name} | {digest or text('export.card_file_missing', lang)} |" for name, digest in files]
    lines += ["", "### " + text("export.card_chat", lang), "",
              "- " + text("export.card_template", lang),
              "- " + text("export.card_switches", lang, switches=facts["switches"]),
              "- " + text("export.card_stops", lang, stops=facts["stops"]),
              "- " + text("export.card_system", lang, system=system_prompt or "-"),
              "- " + text("export.card_exported", lang, date=facts["date"], version=facts["version"]), ""]
    return lines


def catalog_entry(name: str):
    """The model catalogue's entry for a model name, a local folder named after one, or a hub folder name."""
    from .catalog import find_entry, load_catalog

    catalog = load_catalog()
    folder = Path(name.rstrip("/")).name
    for candidate in (name, folder, folder.replace("--", "/", 1)):
        found = find_entry(candidate, catalog)
        if found is not None:
            return found
    return None


def base_name(name: str, entry) -> str:
    """How the card names the base model: its hub id, else its folder's name (never a local path)."""
    if entry is not None and (entry.huggingface_id or entry.modelscope_id):
        return entry.huggingface_id or entry.modelscope_id
    path = Path(name)
    return path.name if path.is_absolute() or name.startswith((".", "~")) else name


def file_sha256(path: Path) -> str:
    """The file's sha256 in hex; "" when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def _settings_yaml(config, base: str) -> str:
    from .config import dump_yaml

    return dump_yaml(config.replace(model_name_or_path=base, data_files=[Path(f).name for f in config.data_files]))
