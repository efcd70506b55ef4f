"""Tiny model folders for fault-injection tests: built in a fraction of a second, never trained.

`build_tiny_model(dest)` is a 1-layer Llama with the demo model's tokenizer recipe (byte-level BPE,
ChatML template) at a much smaller size. `add_remote_code(folder, kind, marker)` makes a folder ship
its own Python code, the way hub models do (auto_map in config.json or tokenizer_config.json); each
file creates `marker` when imported, so a test sees whether any of that code ran.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

CORPUS = ["皇上万福金安，臣妾给皇上请安。", "The studio trains small adapters and compares answers.",
          "臣妾住在碎玉轩。", "你好！你是谁？", "Low rank adaptation learns a small update."] * 4
# Which files make a folder need its code: the model's (an unknown model type), the tokenizer's, or both.
REMOTE_KINDS = ("model", "tokenizer", "both")


def build_tiny_model(dest: Path, hidden_size: int = 16, intermediate_size: int = 32) -> Path:
    from lora_studio.demo_model import DemoRecipe, _create_model, _save_quietly, train_tokenizer

    recipe = DemoRecipe(vocab_size=300, hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=256)
    tokenizer = train_tokenizer(CORPUS, recipe)
    dest.mkdir(parents=True)
    _save_quietly(_create_model(tokenizer, recipe), dest)
    tokenizer.save_pretrained(dest)
    return dest


def copy_model(src: Path, parent: Path) -> Path:
    """A copy under a name never used before: transformers caches imported model code by folder name."""
    dest = parent / f"model-{uuid.uuid4().hex[:10]}"
    dest.mkdir(parents=True)
    for file in src.iterdir():
        (dest / file.name).write_bytes(file.read_bytes())
    return dest


def add_remote_code(folder: Path, kind: str, marker: Path) -> Path:
    """Make `folder` ship code (see REMOTE_KINDS) whose import writes `marker`."""
    touch = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('remote code ran')\n"
    if kind in ("model", "both"):
        (folder / "configuration_x.py").write_text(
            touch + "from transformers import LlamaConfig\n\n\nclass XConfig(LlamaConfig):\n"
                    "    model_type = 'x-llama'\n", encoding="utf-8")
        (folder / "modeling_x.py").write_text(
            touch + "from transformers import LlamaForCausalLM\n\nfrom .configuration_x import XConfig\n\n\n"
                    "class XForCausalLM(LlamaForCausalLM):\n    config_class = XConfig\n", encoding="utf-8")
        _update_json(folder / "config.json", model_type="x-llama", auto_map={
            "AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    if kind in ("tokenizer", "both"):
        (folder / "tokenization_x.py").write_text(
            touch + "from transformers import PreTrainedTokenizerFast\n\n\n"
                    "class XTokenizer(PreTrainedTokenizerFast):\n    pass\n", encoding="utf-8")
        _update_json(folder / "tokenizer_config.json", tokenizer_class="XTokenizer",
                     auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", "tokenization_x.XTokenizer"]})
    return folder


def _update_json(file: Path, **changes) -> None:
    values = json.loads(file.read_text(encoding="utf-8"))
    values.update(changes)
    file.write_text(json.dumps(values, indent=2), encoding="utf-8")


# --- runs ------------------------------------------------------------------------------------------
PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"


def train_tiny_run(model_dir: Path, workspace, name: str = "tiny-run") -> Path:
    """A finished 2-step run (checkpoint-1, checkpoint-2, adapter/) on `model_dir`; its folder."""
    from lora_studio.config import RunConfig
    from lora_studio.events import Finished
    from lora_studio.training import TrainingJob

    config = RunConfig(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=64,
                       per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=2,
                       save_steps=1, logging_steps=1, run_name=name)
    job = TrainingJob(config, workspace).start()
    assert job.join(120), "the tiny run did not finish"
    assert isinstance(job.events.last(Finished), Finished), job.events.since(0)[-3:]
    return job.run_dir


def interrupted_copy(run_dir: Path, dest: Path, **config_changes) -> Path:
    """A copy of a finished run that looks killed after checkpoint-1 (resumable), its config.yaml changed.

    `config_changes` are written into config.yaml as they are (an old run's keys included).
    """
    import shutil

    import yaml

    shutil.copytree(run_dir, dest)
    shutil.rmtree(dest / "checkpoints" / "checkpoint-2")
    shutil.rmtree(dest / "adapter")
    events = (dest / "events.jsonl").read_text(encoding="utf-8").splitlines()
    (dest / "events.jsonl").write_text("".join(line + "\n" for line in events if '"finished"' not in line),
                                       encoding="utf-8")
    config = yaml.safe_load((dest / "config.yaml").read_text(encoding="utf-8"))
    config.update(run_name=dest.name, **config_changes)
    (dest / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return dest
