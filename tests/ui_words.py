"""What counts as an English word of ours on a page a Chinese user reads, and as Chinese on an English one.

Names stay as they are in both languages (the issue's rule): settings and the values they take,
presets, model ids and names, files, paths, options, numbers with units. What is left of a text
once they are set aside must be Chinese, apart from the technical terms in TERMS.
"""

from __future__ import annotations

import dataclasses
import re

# Latin-letter words a Chinese reader is meant to see: technical terms and proper names that Chinese
# documentation writes this way, not translations we owe. Names of things (settings, their values,
# presets, models, files, paths, numbers with units) are recognised by `is_name` instead.
PRODUCT = "LoRA Studio"  # our name, in the licence of the demo model it builds
TERMS = frozenset(term.lower() for term in {
    "LoRA", "rsLoRA", "DoRA", "YAML", "JSON", "JSONL", "CSV", "TSV", "Parquet", "token", "tokens", "GPU", "CPU", "RAM", "GB", "MB", "KB", "GiB", "MiB",
    "ID", "API", "ModelScope", "Hugging", "Face", "Gradio", "Python", "AdamW", "Top-p", "Top-k", "ChatML",
    "Ctrl-C",  # a key to press
    "GGUF", "Ollama", "Space", "Spaces", "Modelfile", "safetensors", "transformers", "llama-cpp-python",  # export
    "QLoRA", "bitsandbytes", "DDP", "FSDP", "DeepSpeed", "torchrun", "accelerate",  # scale-out, by their names
    "ROUGE", "ROUGE-L", "chrF", "txt",  # metric names; a file type
    "dialog",  # a character script's field name, like role_name beside it
    "alpha", "dropout",  # the LoRA hyperparameters' own names ("LoRA alpha", "LoRA dropout")
    "sqrt",  # in the formula lora_alpha / sqrt(r)
    "bilibili",  # the company, in the model name Index-1.9B-Chat (bilibili)
})


def known_names() -> frozenset[str]:
    """Names a page shows as they are: settings and the values they take, presets, models."""
    from lora_studio.catalog import load_catalog
    from lora_studio.config import RunConfig
    from lora_studio.export import TARGETS
    from lora_studio.presets import BUNDLED
    from lora_studio.sampling import SamplingConfig

    names = {"llama", "huanhuan"}  # the demo model's architecture (config.json); the example login
    for cls in (RunConfig, SamplingConfig):
        for spec in dataclasses.fields(cls):
            names.add(spec.name)
            for value in (*spec.metadata.get("choices", ()), *spec.metadata.get("suggestions", ())):
                names.update(str(value).lower().replace(",", " ").split())
    names.update(path.stem for path in BUNDLED.glob("*.yaml"))
    names.update(TARGETS)  # the export targets, as `export --to` takes them and an export folder is named
    for entry in load_catalog():
        names.update({entry.key, entry.modelscope_id, entry.huggingface_id, entry.template})
    return frozenset(names)


def is_name(token: str, names: frozenset[str]) -> bool:
    """A name shown as it is: a setting or its value, an id, a file, a path, an option, a number."""
    if token.lower() in names or token.startswith("--"):
        return True
    return re.search(r"[0-9_/\\]|\w\.\w|<\|", token) is not None  # digits, paths, files, ids, tokens


def english_words(text: str, names: frozenset[str]) -> list[str]:
    """Our English words in a text: Latin words of two letters or more that are neither names nor TERMS."""
    text = re.sub(r"「[^」]*」", " ", text).replace(PRODUCT, " ")  # 「a record's prompt」 quoted: data
    found = []
    for token in re.findall(r"[A-Za-z0-9_./\\:<|>'+-]+", text):
        token = token.strip("'").rstrip(".:-+'")
        if token.lower() in TERMS or is_name(token, names):
            continue
        found += [word for word in re.findall(r"[A-Za-z]{2,}", token) if word.lower() not in TERMS]
    return found


def chinese(text: str) -> list[str]:
    """Runs of CJK characters and full-width punctuation."""
    return re.findall(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+", re.sub(r"「[^」]*」", " ", text))
