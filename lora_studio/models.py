"""Find and load a base model and its tokenizer, the same way for training, chat and estimates.

A model name resolves, in order, to: the built-in demo model, a local folder, a folder in the
workspace's models/, or a hub id already downloaded there. Nothing is downloaded here: a missing hub
model is an error that says which `download` command fetches it. Index checkpoints always load natively
(as Llama, no remote code). Any other model's own code runs only with the user's consent, the
`trust_remote_code` keyword (default False) that only a CLI flag or the studio's checkbox sets
(remote_code.py); pickled weights are read only as plain tensors (pickles.py).

`renderer_for` is the one place a `ChatRenderer` is made for a model: training (through `load`), the
dataset report and the studio's dataset views all get theirs from it, so none can template differently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import pickles, remote_code
from .config import RunConfig
from .errors import ModelError, first_line
from .i18n import msg
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


def load_tokenizer(path: Path, config: RunConfig, model_config: dict | None = None,
                   trust_remote_code: bool = False):
    """The model's tokenizer; `trust_remote_code` is the user's consent to run code the model ships."""
    from .index_model import is_index_config

    model_config = model_config if model_config is not None else read_model_config(path)
    if is_index_config(model_config):
        from .index_model import load_index_tokenizer

        return load_index_tokenizer(path)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if remote_code.is_refusal(exc):
            raise remote_code.refusal(path, model_config) from None
        raise ModelError(msg("models.tokenizer_failed", detail=first_line(exc)), str(path),
                         msg("models.incomplete_hint")) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, config: RunConfig, model_config: dict | None = None, trust_remote_code: bool = False):
    """The model's weights, on the GPU when there is one; remote code only with `trust_remote_code`.

    With `quantization` on, the frozen weights load quantised by bitsandbytes (quantization.py).
    """
    from .index_model import is_index_config
    from .quantization import load_arguments
    from .runtime import torch_dtype

    model_config = model_config if model_config is not None else read_model_config(path)
    dtype = torch_dtype(config.dtype)
    quantized = load_arguments(config)  # {} unless quantised; a clear error where bitsandbytes cannot run
    if is_index_config(model_config):  # never its own code: the native Llama load is exact (index_model.py)
        from .index_model import load_index_model

        model = load_index_model(path, dtype, **quantized)
    else:
        model = _load_transformers_model(path, model_config, dtype, trust_remote_code, **quantized)
    import torch

    if torch.cuda.is_available() and not quantized:  # a quantised model is placed by its device_map
        model = model.to("cuda")
    return model


def _load_transformers_model(path: Path, model_config: dict, dtype, trust_remote_code: bool, **quantized):
    from transformers import AutoModelForCausalLM

    remote_code.require_consent(path, model_config, trust_remote_code)
    try:
        with pickles.explained(path, "model"):
            return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code,
                                                        **quantized)
    except (OSError, ValueError, KeyError) as exc:
        if remote_code.is_refusal(exc):
            raise remote_code.refusal(path, model_config) from None
        raise ModelError(msg("models.model_failed", detail=first_line(exc)), str(path),
                         msg("models.incomplete_hint")) from None


def renderer_for(config: RunConfig, workspace: Workspace, system_prompt: str | None = None,
                 trust_remote_code: bool = False) -> "ChatRenderer":
    """The chat renderer (and its tokenizer) training would use for `config`'s model; loads no weights.

    `system_prompt` replaces the config's default system prompt (None keeps it); `trust_remote_code`
    is the user's consent, in this session, to run a custom tokenizer's code.
    """
    path = resolve_model_path(config.model_name_or_path, workspace)
    return _renderer(path, read_model_config(path), config, system_prompt, trust_remote_code)


def load(config: RunConfig, workspace: Workspace, system_prompt: str | None = None,
         trust_remote_code: bool = False) -> LoadedModel:
    """Load tokenizer, model and the chat renderer that training and chat share.

    `trust_remote_code` is the user's consent, given in this session (a CLI flag, the studio's
    checkbox), to run code the model ships; no file can give it (remote_code.py).
    """
    path = resolve_model_path(config.model_name_or_path, workspace)
    model_config = read_model_config(path)
    renderer = _renderer(path, model_config, config, system_prompt, trust_remote_code)
    model = load_model(path, config, model_config, trust_remote_code)
    return LoadedModel(model, renderer.tokenizer, renderer, path, model_config.get("model_type", ""))


def _renderer(path: Path, model_config: dict, config: RunConfig, system_prompt: str | None,
              trust_remote_code: bool) -> "ChatRenderer":
    # renderer_for and load both build theirs here, so a report and a run template a record alike
    from .templates import ChatRenderer

    tokenizer = load_tokenizer(path, config, model_config, trust_remote_code)
    return ChatRenderer(tokenizer, config.template, model_config.get("model_type"),
                        config.system_prompt if system_prompt is None else system_prompt,
                        config.chat_template_kwargs)
