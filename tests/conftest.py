"""Shared fixtures: one CPU thread, an isolated workspace, and the tiny demo model built once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# transformers copies a model's own code here, decided once at import: never under ~/.cache in tests
os.environ.setdefault("HF_MODULES_CACHE", str(Path(tempfile.gettempdir()) / "lora-studio-tests-hf-modules"))

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2-chatml"
HUANHUAN = SHARED / "data" / "huanhuan.json"


def pytest_report_header(config):
    if not SHARED.is_dir():
        return (f"WARNING: {SHARED} is missing: the tests that read the real Qwen2 tokenizer and Zhen Huan "
                "data there will fail. Check the project out next to its shared/ folder.")
    return f"shared material: {SHARED}"


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """Every test gets its own empty workspace folder (also $LORA_STUDIO_HOME, for CLI subprocesses)."""
    home = tmp_path / "workspace"
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    return home


@pytest.fixture
def ws(workspace):
    """The test's workspace as the object the library takes."""
    from lora_studio.workspace import Workspace

    return Workspace(workspace)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The tiny demo chat model (tokenizer, template, briefly pre-trained weights), built once."""
    from lora_studio.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("models") / "demo-tiny")
