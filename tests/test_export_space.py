"""The Space export: every file a Space needs, and an app.py that boots offline and answers like the studio.

One tiny run on the demo model (its lora_B weights perturbed so the adapter visibly changes answers) is
exported once for the module; the folder's files are checked, then `python app.py` runs in a subprocess
with BASE_MODEL_PATH pointing at the demo model (it is on no hub) and answers a probe prompt through
gradio_client, greedily, with exactly the studio chat's tuned answer.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lora_studio.config import RunConfig, load_yaml, save_yaml
from lora_studio.export_context import ExportContext
from lora_studio.export import ExportError
from lora_studio.sampling import SamplingConfig

from .conftest import ROOT
from .tiny_model_fixture import train_tiny_run

PERSONA = "现在你要扮演皇帝身边的女人--甄嬛"
PROBES = ["你是谁？", "皇上最近可好？"]
MAX_NEW_TOKENS = 24


def perturb_lora_b(adapter: Path) -> None:
    """Two training steps barely move lora_B; make the adapter matter for every answer."""
    import torch
    from safetensors.torch import load_file, save_file

    file = adapter / "adapter_model.safetensors"
    tensors = load_file(str(file))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in tensors.items():
        if "lora_B" in name:
            tensors[name] = tensor + 0.5 * torch.randn(tensor.shape, generator=generator)
    save_file(tensors, str(file), metadata={"format": "pt"})


def context(ws, config, run: Path, adapter: Path, staging: Path, hub_id: str = "", renderer=None):
    return ExportContext(request=SimpleNamespace(run=run, hub_id=hub_id), workspace=ws, config=config,
                         adapter=adapter, staging=staging, renderer=renderer, log=lambda message: None)


@pytest.fixture(scope="module")
def space(tmp_path_factory, demo_model_dir):
    from lora_studio.export_space import build_space
    from lora_studio.models import renderer_for
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("space-workspace"))
    run = train_tiny_run(demo_model_dir, ws, "tiny-space")
    config = dataclasses.replace(load_yaml(run / "config.yaml"), system_prompt=PERSONA, probe_prompts=PROBES)
    save_yaml(config, run / "config.yaml")
    perturb_lora_b(run / "adapter")
    folder = tmp_path_factory.mktemp("space") / "staging"
    built = build_space(context(ws, config, run, run / "adapter", folder, renderer=renderer_for(config, ws)))
    return SimpleNamespace(folder=built, run=run, ws=ws, config=config)


def test_the_space_folder_has_every_file_with_the_runs_settings(space):
    folder = space.folder
    for name in ("app.py", "space_config.json", "requirements.txt", "README.md", "ms_deploy.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json"):
        assert (folder / name).is_file(), name
    app = (folder / "app.py").read_text(encoding="utf-8")
    assert app == (ROOT / "lora_studio" / "space_app.py").read_text(encoding="utf-8")
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(app))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(app))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "lora_studio" not in imported

    gradio_version = metadata.version("gradio")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio_version and front["app_file"] == "app.py"
    assert front["title"] == "tiny-space" and front["emoji"]
    assert "models" not in front and "license" not in front  # the demo model is on no hub, under no licence
    assert "BASE_MODEL_PATH=" in readme and "pip install -r requirements.txt && python app.py" in readme

    studio = {line.split("=")[0]: line for line in (ROOT / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    wanted = (folder / "requirements.txt").read_text(encoding="utf-8").split()
    for package in ("torch", "transformers", "peft", "accelerate", "gradio", "modelscope"):
        assert studio[package] in wanted, package

    deploy = json.loads((folder / "ms_deploy.json").read_text(encoding="utf-8"))
    assert deploy["sdk_type"] == "gradio" and deploy["sdk_version"] == gradio_version
    assert deploy["$schema"].endswith("deploy_schema.json") and deploy["resource_configuration"]
    assert {"name": "BASE_MODEL_SOURCE", "value": "modelscope"} in deploy["environment_variables"]

    adapter_config = json.loads((folder / "adapter/adapter_config.json").read_text(encoding="utf-8"))
    assert adapter_config["base_model_name_or_path"] == "demo-tiny"
    assert (folder / "adapter/adapter_model.safetensors").read_bytes() == \
        (space.run / "adapter/adapter_model.safetensors").read_bytes()

    config = json.loads((folder / "space_config.json").read_text(encoding="utf-8"))
    assert config["system"] == PERSONA and config["examples"] == PROBES and config["base_model"] == ""
    assert config["sampling"] == SamplingConfig().to_dict()
    assert [s["name"] for s in config["sliders"]] == ["max_new_tokens", "temperature", "top_p", "top_k",
                                                      "repetition_penalty"]
    assert config["labels"]["zh"]["title"] == "tiny-space · 角色对话"
    assert config["labels"]["en"]["label_temperature"] == "Temperature" and config["labels"]["zh"]["label_temperature"] == "温度"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, log: Path, seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"app.py did not listen within {seconds} s:\n{log.read_text()[-3000:]}")


def test_the_space_boots_offline_and_answers_like_the_studio(space, demo_model_dir, tmp_path):
    from gradio_client import Client

    from lora_studio.chat import ChatEngine

    engine = ChatEngine(space.ws)
    engine.load_run(space.run / "adapter")
    greedy = SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)
    base, tuned = engine.answer([{"role": "user", "content": PROBES[0]}], sampling=greedy)
    assert tuned and tuned != base  # the adapter changes the answer, so the Space must have loaded it

    port = free_port()
    env = {**os.environ, "BASE_MODEL_PATH": str(demo_model_dir), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HOME": str(tmp_path / "hf"),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    log = tmp_path / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=space.folder, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for(port, process, log)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        # message, system prompt, then the sliders: max_new_tokens, temperature, top_p, top_k, repetition_penalty
        answer = client.predict(PROBES[0], PERSONA, MAX_NEW_TOKENS, 0.0, 0.8, 5, 1.0, api_name="/chat")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert answer == tuned
    assert "正在加载基础模型" in log.read_text(encoding="utf-8")


# --- the base model's hub id -----------------------------------------------------------------------
def fake_downloaded(ws, folder_name: str) -> Path:
    folder = ws.models / folder_name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def test_a_catalogue_model_is_named_by_its_hub_ids_with_its_licence(ws):
    from lora_studio.export_space import base_model, readme

    fake_downloaded(ws, "Qwen--Qwen2.5-0.5B-Instruct")
    ctx = context(ws, RunConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct"), ws.runs / "r", None, None)
    base = base_model(ctx)
    assert (base.huggingface, base.modelscope, base.demo) == ("Qwen/Qwen2.5-0.5B-Instruct",) * 2 + (False,)
    front = yaml.safe_load(readme("persona", base, "6.31.0").split("---\n")[1])
    assert front["models"] == ["Qwen/Qwen2.5-0.5B-Instruct"] and front["license"] == "apache-2.0"


def test_a_local_folder_needs_a_hub_id_unless_one_is_given(ws, tmp_path):
    from lora_studio.export_space import base_model

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    config = RunConfig(model_name_or_path=str(folder))
    with pytest.raises(ExportError) as caught:
        base_model(context(ws, config, ws.runs / "r", None, None))
    assert str(folder) in caught.value.render("en") and "--hub-id" in caught.value.render("zh")
    given = base_model(context(ws, config, ws.runs / "r", None, None, hub_id="someone/my-model"))
    assert given.hub_id == "someone/my-model" and given.huggingface == "someone/my-model"


def test_an_index_space_loads_as_llama_and_prompts_like_the_studio(ws, tmp_path, monkeypatch):
    """Index needs remote code on its hub; the Space loads it natively, head rows normalised, as the studio."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_studio import space_app
    from lora_studio.export_space import build_space
    from lora_studio.models import load

    from .index_fixture import build_index_checkpoint

    index_dir = build_index_checkpoint(tmp_path / "Index-tiny")
    config = RunConfig(model_name_or_path=str(index_dir), system_prompt=PERSONA, probe_prompts=PROBES)
    loaded = load(config, ws)
    tuned = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                    init_lora_weights=False)).eval()
    tuned.save_pretrained(str(tmp_path / "adapter"))
    folder = build_space(context(ws, config, tmp_path / "run", tmp_path / "adapter", tmp_path / "space",
                                 hub_id="IndexTeam/Index-1.9B-Chat", renderer=loaded.renderer))
    front = yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert front["models"] == ["IndexTeam/Index-1.9B-Chat"] and front["license"] == "other"
    assert {"sentencepiece", "protobuf"} <= {line.split("=")[0] for line in
                                             (folder / "requirements.txt").read_text().split()}

    settings = space_app.load_config(folder)
    assert settings["llama_config"]["model_type"] == "llama" and settings["base_model"] == "IndexTeam/Index-1.9B-Chat"
    monkeypatch.setenv("BASE_MODEL_PATH", str(index_dir))
    persona = space_app.Persona(folder, settings)
    ids = persona.prompt_ids(PROBES[0], [], PERSONA)
    assert ids[0].tolist() == loaded.renderer.encode_prompt([{"role": "user", "content": PROBES[0]}])
    with torch.no_grad():
        assert torch.allclose(persona.model(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-5)
