"""The command line as a user runs it: whole outputs, exit codes, no tracebacks, torchrun."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_training import PALACE_QA

ROOT = Path(__file__).resolve().parent.parent


def studio(*args, env_home: Path, timeout: float = 300, input: str | None = None):
    env = {**os.environ, "LORA_STUDIO_HOME": str(env_home), "OMP_NUM_THREADS": "1"}
    env.pop("LORA_STUDIO_DEBUG", None)
    return subprocess.run([sys.executable, "studio.py", *map(str, args)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, input=input)


def write_config(path: Path, model_dir: Path, **changes) -> Path:
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=128,
                  lora_dropout=0.0, learning_rate=3e-3, per_device_train_batch_size=4,
                  gradient_accumulation_steps=1, lr_scheduler_type="constant", max_steps=6, logging_steps=2,
                  save_steps=1000, system_prompt="现在你要扮演皇帝身边的女人--甄嬛")
    values.update(changes)
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


def test_train_then_chat(demo_model_dir, tmp_path, workspace):
    config = write_config(tmp_path / "run.yaml", demo_model_dir)
    result = studio("train", config, "--set", "run_name=cli-run", "--set", "max_steps=4", env_home=workspace)
    assert result.returncode == 0, result.stderr
    run_dir = workspace / "runs" / "cli-run"
    assert f"Run directory: {run_dir}" in result.stdout
    assert "Run completed at step 4" in result.stdout and "Traceback" not in result.stderr
    assert "4/4" in result.stderr  # tqdm's bar reached the end

    chat = studio("chat", "--adapter", run_dir, "--prompt", "你是谁？", "--temperature", "0", env_home=workspace)
    assert chat.returncode == 0, chat.stderr
    assert "> 你是谁？" in chat.stdout and "基础模型 base" in chat.stdout and "微调后 tuned" in chat.stdout

    interactive = studio("chat", "--adapter", run_dir, "--temperature", "0", env_home=workspace,
                         input="你好\n\n")
    assert interactive.returncode == 0 and "> 你好" in interactive.stdout

    runs = studio("runs", env_home=workspace)
    assert re.search(r"cli-run\s+completed\s+step 4/4", runs.stdout)


@pytest.mark.parametrize("args,message", [
    (["train", "missing.yaml"], "missing.yaml: config file not found"),
    (["train", "presets/demo-tiny.yaml", "--set", "r=0"], "'r' is 0, outside the allowed range [1, 1024]"),
    (["train", "presets/demo-tiny.yaml", "--set", "lora_rank=8"], "unknown setting 'lora_rank'"),
    (["chat", "--adapter", "nowhere"], "nowhere: no adapter here"),
    (["data", "check", "nope.json"], "nope.json"),
    (["train", "presets/demo-tiny.yaml", "--set", "model_name_or_path=Someone/Unknown-Model", "--dry-run"],
     "python studio.py download Someone/Unknown-Model"),
])
def test_user_errors_exit_non_zero_without_traceback(args, message, workspace):
    result = studio(*args, env_home=workspace, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_training_failure_is_reported_not_raised(demo_model_dir, tmp_path, workspace):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "ok"}\n{"instruction": "x", "output": \n', encoding="utf-8")
    config = write_config(tmp_path / "run.yaml", demo_model_dir, data_files=[str(bad)])
    result = studio("train", config, env_home=workspace)
    assert result.returncode == 1 and "bad.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_data_check_prints_statistics(workspace):
    result = studio("data", "check", PALACE_QA, env_home=workspace)
    assert result.returncode == 0, result.stderr
    assert "20 records" in result.stdout


def test_torchrun_two_ranks_take_the_same_steps(demo_model_dir, tmp_path, workspace):
    config = write_config(tmp_path / "ddp.yaml", demo_model_dir, run_name="ddp", max_steps=4)
    env = {**os.environ, "LORA_STUDIO_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--standalone", "studio.py", "train", str(config)], cwd=ROOT, env=env,
                            text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = dict(re.findall(r"\[rank (\d)\] (\d+ optimizer steps, LoRA weight checksum [\d.]+)", result.stdout))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"] and ranks["0"].startswith("4 optimizer")
    assert [p.name for p in (workspace / "runs").iterdir()] == ["ddp"]  # rank 1 created nothing
    assert result.stdout.count("LoRA: ") == 1 and "Traceback" not in result.stderr  # rank 0 speaks for both
    events = (workspace / "runs" / "ddp" / "events.jsonl").read_text().splitlines()
    assert sum('"kind": "progress"' in line for line in events) == 4  # one writer, each step once
