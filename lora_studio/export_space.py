"""The Space export: a folder that runs the persona as a chat app on Hugging Face Spaces or ModelScope 创空间.

`build_space(ctx)` writes into `ctx.staging`:

- `app.py`: space_app.py verbatim (it never imports lora_studio) and `space_config.json`, its settings
  from the run: base model hub ids, chat template and switches, persona prompt, stop token ids, the
  run's sampling and slider bounds, probe prompts as examples, a concurrency limit, and every label in
  Chinese and English rendered from the catalogue (area "space");
- `tokenizer/`: the run's tokenizer as the studio loaded it (Index's converted fast tokenizer included);
- `adapter/`: the adapter's safetensors and its adapter_config.json with `base_model_name_or_path`
  set to the base model's hub id;
- `requirements.txt`: torch, transformers, peft, accelerate, gradio and modelscope pinned as in the
  studio's own requirements.txt (installed versions where it has none), plus sentencepiece and
  protobuf when the tokenizer is SentencePiece;
- `README.md`: the Hugging Face Spaces front matter (title, emoji, sdk gradio, sdk_version = the
  installed gradio, app_file, licence when the catalogue knows it, base model under `models:`) and
  how to run it;
- `ms_deploy.json` for 创空间. Its fields ($schema, sdk_type, sdk_version, base_image,
  resource_configuration, environment_variables) follow the examples published with ModelScope's
  deploy schema (https://modelscope.cn/api/v1/studios/deploy_schema.json, as quoted by public
  ModelScope deployment guides; the schema itself was not readable here), and set
  BASE_MODEL_SOURCE=modelscope so the app downloads the base from ModelScope.

The base model's hub id is the request's `hub_id`, else the catalogue's ids for the run's model, else
the run's model name when it is a hub id. A local folder has none and the export asks for it, except
the built-in demo model, which exists on no hub: its Space runs with BASE_MODEL_PATH set to a local
copy (`BASE_MODEL_PATH=... python app.py`), as the README says.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import space_app
from .config import Setting
from .files import write_text_atomic
from .i18n import msg, text
from .export import ExportError
from .sampling import SamplingConfig, SamplingSetting

APP_FILE = "app.py"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
DEMO_HUB_NAME = "demo-tiny"
CONCURRENCY = 2
PACKAGES = ("torch", "transformers", "peft", "accelerate", "gradio", "modelscope")
SENTENCEPIECE_PACKAGES = ("sentencepiece", "protobuf")
LABEL_KEYS = ("title", "system", "settings", "loading", "no_base_model")
MS_SCHEMA = "https://modelscope.cn/api/v1/studios/deploy_schema.json"
MS_BASE_IMAGE = "ubuntu22.04-py311-torch2.3.1-modelscope1.31.0"
MS_RESOURCE = "platform/2v-cpu-16g-mem"  # the free CPU machine every ModelScope user gets
STUDIO_REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
LANGS = ("zh", "en")


@dataclass(frozen=True)
class BaseModel:
    path: Path            # the local copy the studio trained on
    huggingface: str      # hub ids, "" when unknown
    modelscope: str
    demo: bool

    @property
    def hub_id(self) -> str:
        return self.huggingface or self.modelscope or (DEMO_HUB_NAME if self.demo else "")


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).expanduser().is_dir()


def base_model(ctx) -> BaseModel:
    """The run's base model and its hub ids (see the module docstring); asks for one when none is known."""
    from .catalog import find_entry
    from .demo_model import BUILD_FILE
    from .models import DEMO_MODEL, resolve_model_path

    name = ctx.config.model_name_or_path
    path = resolve_model_path(name, ctx.workspace)
    given = (getattr(ctx.request, "hub_id", "") or "").strip()
    demo = name == DEMO_MODEL or (path / BUILD_FILE).is_file()
    entry = find_entry(given or name) or (find_entry(path.name.replace("--", "/", 1)) if "--" in path.name else None)
    if entry is not None and (entry.huggingface_id or entry.modelscope_id):
        return BaseModel(path, entry.huggingface_id, entry.modelscope_id, demo)
    hub = given or (name if _looks_like_hub_id(name) else "")
    if not hub and path.parent == ctx.workspace.models and "--" in path.name:
        hub = path.name.replace("--", "/", 1)
    if not hub and not demo:
        raise ExportError(msg("space.needs_hub_id", path=str(path)), Setting.model_name_or_path,
                          msg("space.needs_hub_id_fix"))
    return BaseModel(path, hub, hub, demo)


def labels(name: str) -> dict:
    """Every label app.py shows, per language, from the catalogue (the sliders' from the settings)."""
    found = {}
    for lang in LANGS:
        entries = {key: text(f"space.{key}", lang, name=name) for key in LABEL_KEYS}
        entries.update({f"label_{spec['name']}": text(f"field.{spec['name']}", lang) for spec in sliders()})
        found[lang] = entries
    return found


def sliders(sampling: SamplingConfig | None = None) -> list[dict]:
    """Slider specs for every sampling setting but the seed: bounds from SamplingConfig's metadata."""
    import dataclasses

    sampling = sampling or SamplingConfig()
    return [{"name": f.name, "label": f"label_{f.name}", "min": f.metadata["min"], "max": f.metadata["max"],
             "step": f.metadata["step"], "value": getattr(sampling, f.name)}
            for f in dataclasses.fields(SamplingConfig) if f.name != SamplingSetting.seed]


def requirement_lines(sentencepiece: bool) -> list[str]:
    """The Space's requirements, pinned as the studio pins them (installed versions otherwise)."""
    pinned = {}
    if STUDIO_REQUIREMENTS.is_file():
        for line in STUDIO_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"([A-Za-z0-9_.-]+)\s*([=<>!~].*)?$", line)
            if match and match.group(2):
                pinned[match.group(1).lower()] = line.replace(" ", "")
    wanted = PACKAGES + (SENTENCEPIECE_PACKAGES if sentencepiece else ())
    lines = []
    for package in wanted:
        if package in pinned:
            lines.append(pinned[package])
            continue
        try:
            lines.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(package)
    return lines


def _licence_id(entry) -> str:
    """The Hugging Face licence id of a catalogue entry: apache-2.0 / mit when it says so, else other."""
    if entry is None or not entry.huggingface_id:
        return ""
    first = entry.licence.split()[0].strip(".;,(").lower() if entry.licence else ""
    return {"apache-2.0": "apache-2.0", "mit": "mit"}.get(first, "other")


def readme(title: str, base: BaseModel, gradio_version: str) -> str:
    import yaml

    from .catalog import find_entry

    entry = find_entry(base.huggingface or base.modelscope) if not base.demo else None
    header = {"title": title, "emoji": "🎭", "colorFrom": "pink", "colorTo": "purple", "sdk": "gradio",
              "sdk_version": gradio_version, "app_file": APP_FILE, "pinned": False}
    if _licence_id(entry):
        header["license"] = _licence_id(entry)
    if base.huggingface:
        header["models"] = [base.huggingface]
    body = []
    for lang in LANGS:
        body += [f"# {title}", "", text("space.readme_intro", lang, base=base.hub_id), "", "```sh",
                 "pip install -r requirements.txt && python app.py", "```", ""]
        if base.demo:
            body += [text("space.readme_demo", lang), "", "```sh",
                     "BASE_MODEL_PATH=/path/to/demo-tiny python app.py", "```", ""]
        body += [text("space.readme_deploy", lang), ""]
        if entry is not None:
            body += [text("space.readme_licence", lang, licence=entry.licence_text(lang)), ""]
    front = yaml.safe_dump(header, allow_unicode=True, sort_keys=False)
    return f"---\n{front}---\n\n" + "\n".join(body)


def ms_deploy(gradio_version: str) -> dict:
    return {"$schema": MS_SCHEMA, "sdk_type": "gradio", "sdk_version": gradio_version, "base_image": MS_BASE_IMAGE,
            "resource_configuration": MS_RESOURCE,
            "environment_variables": [{"name": "BASE_MODEL_SOURCE", "value": "modelscope"},
                                      {"name": "GRADIO_SERVER_NAME", "value": "0.0.0.0"}]}


def copy_adapter(adapter: Path, dest: Path, hub_id: str) -> Path:
    """The adapter's weights and config, the config naming the base model by its hub id."""
    weights = Path(adapter) / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExportError(msg("space.no_safetensors"), str(adapter), msg("space.no_safetensors_fix"))
    dest.mkdir(parents=True, exist_ok=True)
    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = hub_id
    write_text_atomic(dest / "adapter_config.json", json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    shutil.copyfile(weights, dest / weights.name)
    return dest


def space_config(ctx, base: BaseModel, title: str) -> dict:
    from .export_ollama import run_sampling
    from .index_model import is_index_config, llama_config_from_index
    from .models import read_model_config

    renderer = ctx.renderer
    model_config = read_model_config(base.path)
    sampling = run_sampling(getattr(ctx.request, "run", None))
    llama = llama_config_from_index(model_config).to_dict() if is_index_config(model_config) else None
    return {"base_model": base.huggingface, "base_model_modelscope": base.modelscope, "adapter": ADAPTER_DIR,
            "llama_config": llama, "chat_template": renderer.chat_template,
            "template_kwargs": dict(renderer.template_kwargs), "system": renderer.system_prompt or "",
            "stop_token_ids": list(renderer.stop_token_ids), "sampling": sampling.to_dict(),
            "sliders": sliders(sampling), "examples": list(ctx.config.probe_prompts or ()),
            "concurrency": CONCURRENCY, "labels": labels(title)}


def build_space(ctx) -> Path:
    """Write the Space folder into ctx.staging (see the module docstring); returns that folder."""
    staging = Path(ctx.staging)
    staging.mkdir(parents=True, exist_ok=True)
    ctx.progress("space.stage_files", 0, 1)
    base = base_model(ctx)
    title = ctx.config.run_name or Path(getattr(ctx.request, "run", "") or "persona").name
    gradio_version = metadata.version("gradio")
    copy_adapter(ctx.adapter, staging / ADAPTER_DIR, base.hub_id)
    ctx.check_stop()
    ctx.renderer.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
    sentencepiece = any((folder / "tokenizer.model").is_file() for folder in (base.path, staging / TOKENIZER_DIR))
    write_text_atomic(staging / space_app.CONFIG_FILE,
                      json.dumps(space_config(ctx, base, title), ensure_ascii=False, indent=2) + "\n")
    write_text_atomic(staging / APP_FILE, Path(space_app.__file__).read_text(encoding="utf-8"))
    write_text_atomic(staging / "requirements.txt", "\n".join(requirement_lines(sentencepiece)) + "\n")
    write_text_atomic(staging / "README.md", readme(title, base, gradio_version))
    write_text_atomic(staging / "ms_deploy.json", json.dumps(ms_deploy(gradio_version), indent=2) + "\n")
    ctx.log(msg("space.written", folder=str(staging), base=base.hub_id))
    ctx.progress("space.stage_files", 1, 1)
    return staging
