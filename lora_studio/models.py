"""Find and load a base model and its tokenizer, the same way for training, chat and estimates.

A model name resolves, in order, to: the built-in demo model, a local folder, a folder in the
workspace's models/, or a hub id already downloaded there. Nothing is downloaded here: a missing hub
model is an error that says which `download` command fetches it. Index checkpoints load natively (as
Llama, no remote code) unless the user explicitly trusts remote code.

`renderer_for` is the one place a `ChatRenderer` is made for a model: training (through `load`), the
dataset report and the studio's dataset views all get theirs from it, so none can template differently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RunConfig, Setting
from .errors import ModelError, first_line
from .i18n import Msg, msg
from .workspace import Workspace

if TYPE_CHECKING:
    from .templates import ChatRenderer

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


def resolve_model_path(name: str, workspace: Workspace) -> Path:
    """Where the model called `name` lives on disk; builds the demo model on first use."""
    name = (name or DEMO_MODEL).strip()
    if name == DEMO_MODEL:
        from .demo_model import ensure_demo_model

        return ensure_demo_model(workspace)
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    for candidate in (workspace.models / name, workspace.models / hub_folder_name(name)):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return candidate
    if local.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise ModelError(msg("models.folder_not_found"), name, msg("models.folder_not_found_fix"))
    raise ModelError(msg("models.not_downloaded"), name, msg("models.not_downloaded_fix", name=name))


def read_model_config(path: Path) -> dict:
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ModelError(msg("models.no_config"), str(path), msg("models.no_config_fix"))
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(msg("models.bad_config", detail=first_line(exc)), str(config_file)) from None


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
        raise ModelError(msg("models.tokenizer_failed", detail=first_line(exc)), str(path),
                         _remote_code_hint(model_config, config)) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, config: RunConfig, model_config: dict | None = None):
    from .runtime import torch_dtype

    model_config = model_config if model_config is not None else read_model_config(path)
    dtype = torch_dtype(config.dtype)
    if _uses_native_index(model_config, config):
        from .index_model import load_index_model

        model = load_index_model(path, dtype)
    else:
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=dtype, trust_remote_code=config.trust_remote_code)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(msg("models.model_failed", detail=first_line(exc)), str(path),
                             _remote_code_hint(model_config, config)) from None
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    return model


def renderer_for(config: RunConfig, workspace: Workspace, system_prompt: str | None = None) -> "ChatRenderer":
    """The chat renderer (and its tokenizer) training would use for `config`'s model; loads no weights.

    `system_prompt` replaces the config's default system prompt (None keeps it).
    """
    path = resolve_model_path(config.model_name_or_path, workspace)
    return _renderer(path, read_model_config(path), config, system_prompt)


def load(config: RunConfig, workspace: Workspace, system_prompt: str | None = None) -> LoadedModel:
    """Load tokenizer, model and the chat renderer that training and chat share."""
    path = resolve_model_path(config.model_name_or_path, workspace)
    model_config = read_model_config(path)
    renderer = _renderer(path, model_config, config, system_prompt)
    model = load_model(path, config, model_config)
    return LoadedModel(model, renderer.tokenizer, renderer, path, model_config.get("model_type", ""))


def _renderer(path: Path, model_config: dict, config: RunConfig, system_prompt: str | None) -> "ChatRenderer":
    # renderer_for and load both build theirs here, so a report and a run template a record alike
    from .templates import ChatRenderer

    tokenizer = load_tokenizer(path, config, model_config)
    return ChatRenderer(tokenizer, config.template, model_config.get("model_type"),
                        config.system_prompt if system_prompt is None else system_prompt)


def _remote_code_hint(model_config: dict, config: RunConfig) -> Msg:
    if model_config.get("auto_map") and not config.trust_remote_code:
        return msg("models.remote_code_hint", key=Setting.trust_remote_code)
    return msg("models.incomplete_hint")
