"""Find and load a base model and its tokenizer, the same way for training, chat and estimates.

A model name resolves, in order, to: the built-in demo model, a local folder, a folder in the
workspace's models/, or a hub id already downloaded there. Nothing is downloaded here: a missing hub
model is an error that says which `download` command fetches it. Index checkpoints load natively (as
Llama, no remote code) unless the user explicitly trusts remote code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, workspace
from .errors import ModelError

DEMO_MODEL = "demo-tiny"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    renderer: Any
    path: Path
    model_type: str


def hub_folder_name(model_id: str) -> str:
    """Workspace folder for a hub id: 'Qwen/Qwen2.5-0.5B-Instruct' -> 'Qwen--Qwen2.5-0.5B-Instruct'."""
    return re.sub(r"[^\w.\-]+", "-", model_id.strip().replace("/", "--")).strip(".-") or "model"


def resolve_model_path(name: str) -> Path:
    """Where the model called `name` lives on disk; builds the demo model on first use."""
    name = (name or DEMO_MODEL).strip()
    if name == DEMO_MODEL:
        from .demo_model import ensure_demo_model

        return ensure_demo_model()
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    models = workspace() / "models"
    for candidate in (models / name, models / hub_folder_name(name)):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return candidate
    if local.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise ModelError("model folder not found", name,
                         "Give a folder holding config.json and the weights, or a hub id like "
                         "Qwen/Qwen2.5-0.5B-Instruct.")
    raise ModelError("this model is not downloaded yet", name,
                     f"Run: python studio.py download {name}  (or use the studio's Model tab).")


def read_model_config(path: Path) -> dict:
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ModelError("no config.json in the model folder", str(path),
                         "Point at the folder that holds config.json, the tokenizer and the weights.")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"config.json is not valid JSON ({exc})", str(config_file)) from None


def pick_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _uses_native_index(model_config: dict, config: RunConfig) -> bool:
    from .index_model import is_index_config

    return is_index_config(model_config) and not config.trust_remote_code


def load_tokenizer(path: Path, config: RunConfig, model_config: dict | None = None):
    model_config = model_config if model_config is not None else read_model_config(path)
    if _uses_native_index(model_config, config):
        from .index_model import load_index_tokenizer

        return load_index_tokenizer(path)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"the tokenizer could not be loaded ({_first_line(exc)})", str(path),
                         _remote_code_hint(model_config, config)) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, config: RunConfig, model_config: dict | None = None):
    model_config = model_config if model_config is not None else read_model_config(path)
    dtype = pick_dtype(config.dtype)
    if _uses_native_index(model_config, config):
        from .index_model import load_index_model

        model = load_index_model(path, dtype)
    else:
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=dtype, trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"the model could not be loaded ({_first_line(exc)})", str(path),
                             _remote_code_hint(model_config, config)) from None
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    return model


def load(config: RunConfig, system_prompt: str | None = None) -> LoadedModel:
    """Load tokenizer, model and the chat renderer that training and chat share."""
    from .templates import ChatRenderer

    path = resolve_model_path(config.model_name_or_path)
    model_config = read_model_config(path)
    tokenizer = load_tokenizer(path, config, model_config)
    renderer = ChatRenderer(tokenizer, config.template, model_config.get("model_type"),
                            config.system_prompt if system_prompt is None else system_prompt)
    model = load_model(path, config, model_config)
    return LoadedModel(model, tokenizer, renderer, path, model_config.get("model_type", ""))


def _remote_code_hint(model_config: dict, config: RunConfig) -> str:
    if model_config.get("auto_map") and not config.trust_remote_code:
        return ("This model ships its own Python code; enable trust_remote_code only if you trust its "
                "author.")
    return "Check that the folder is complete (python studio.py models lists what is missing)."


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
