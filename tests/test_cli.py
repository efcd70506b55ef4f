"""The command line as a user runs it: whole outputs in English and Chinese, exit codes, no tracebacks, torchrun.

Outputs are compared whole. Only what varies between machines and runs is normalised: the workspace
path (shown as WS), tqdm's redrawn bars, and the machine's memory in the dry run's note.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lora_studio import cli
from lora_studio.sampling import SamplingConfig

from .test_training import PALACE_QA

ROOT = Path(__file__).resolve().parent.parent
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
LANG_VALUES = {"en": "en_US.UTF-8", "zh": "zh_CN.UTF-8"}


def studio(*args, env_home: Path, timeout: float = 300, input: str | None = None, lang: str = "en",
           debug: bool = False):
    """`python studio.py ARGS` in a fresh process, with LANG set as an English or a Chinese user has it."""
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARIABLES and k != "LORA_STUDIO_DEBUG"}
    env.update(LORA_STUDIO_HOME=str(env_home), OMP_NUM_THREADS="1", LANG=LANG_VALUES[lang],
               PYTHONIOENCODING="utf-8", CUDA_VISIBLE_DEVICES="")  # the dry run's numbers are a CPU's
    if debug:
        env["LORA_STUDIO_DEBUG"] = "1"
    return subprocess.run([sys.executable, "studio.py", *map(str, args)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, input=input, encoding="utf-8")


def shown(text: str, workspace: Path) -> str:
    """Output with the workspace's path as WS and without tqdm's bars."""
    text = text.replace(str(workspace), "WS")
    return "".join(line for line in text.replace("\r", "\n").splitlines(keepends=True)
                   if not re.search(r"\d+%\|", line))


def write_config(path: Path, model_dir: Path, **changes) -> Path:
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=128,
                  lora_dropout=0.0, learning_rate=3e-3, per_device_train_batch_size=4,
                  gradient_accumulation_steps=1, lr_scheduler_type="constant", max_steps=6, logging_steps=2,
                  save_steps=1000, system_prompt="现在你要扮演皇帝身边的女人--甄嬛")
    values.update(changes)
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


def write_run(workspace: Path, name: str, events: list[dict], model: str = "demo-tiny") -> None:
    """A run folder as a training run leaves it: its settings and its events."""
    folder = workspace / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model_name_or_path: {model}\n", encoding="utf-8")
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def progress(step: int, loss: float, time: float) -> dict:
    return {"kind": "progress", "time": time, "step": step, "total_steps": 4, "epoch": step / 4, "loss": loss}


# --- whole outputs, English and Chinese ---------------------------------------------------------
@pytest.mark.parametrize("lang,expected", [
    ("en", "No runs yet. Start one with: python studio.py train demo-tiny\n"),
    ("zh", "还没有运行。这样开始一个：python studio.py train demo-tiny\n"),
])
def test_runs_when_there_are_none(lang, expected, workspace):
    result = studio("runs", env_home=workspace, lang=lang)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")


@pytest.mark.parametrize("lang,expected", [
    ("en", f"{'cli-run':<40} completed    step 4/4  loss 1.2500  demo-tiny\n"
           f"{'old-run':<40} interrupted  step 2/4  loss 2.5000  Demo/base\n"),
    ("zh", f"{'cli-run':<40} 已完成  第 4/4 步  损失 1.2500  demo-tiny\n"
           f"{'old-run':<40} 已中断  第 2/4 步  损失 2.5000  Demo/base\n"),
])
def test_runs_lists_each_run_newest_first(lang, expected, workspace):
    write_run(workspace, "old-run", [progress(2, 2.5, 1_700_000_000.0)], model="Demo/base")
    write_run(workspace, "cli-run", [progress(2, 2.0, 1_700_000_100.0), progress(4, 1.25, 1_700_000_101.0),
                                     {"kind": "finished", "time": 1_700_000_102.0, "status": "completed",
                                      "output": "adapter", "step": 4, "loss": 1.25}])
    result = studio("runs", env_home=workspace, lang=lang)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")


@pytest.mark.parametrize("lang,expected", [
    ("en", "No models in WS/models yet. Get one with: python studio.py download Qwen/Qwen2.5-0.5B-Instruct  "
           "(or: python studio.py demo-model)\n"),
    ("zh", "WS/models 中还没有模型。这样获取一个：python studio.py download Qwen/Qwen2.5-0.5B-Instruct"
           "（或：python studio.py demo-model）\n"),
])
def test_models_when_there_are_none(lang, expected, workspace):
    result = studio("models", env_home=workspace, lang=lang)
    assert (result.returncode, shown(result.stdout, workspace), result.stderr) == (0, expected, "")


@pytest.mark.parametrize("lang,expected", [
    ("en", "error: --set: unknown setting 'lora_rank'. Did you mean 'lora_alpha'?\n"),
    ("zh", "错误：--set：未知的设置项 'lora_rank'。你是不是想写 'lora_alpha'？\n"),
])
def test_an_unknown_setting_is_one_line_in_the_users_language(lang, expected, workspace):
    result = studio("train", "demo-tiny", "--set", "lora_rank=8", env_home=workspace, lang=lang)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected)


DATA_CHECK = {
    "en": """tests/data/palace_qa.json: 20 records, format OK
Records: 20
Exact duplicates: 0 records
Conflicting prompts: 0
Empty fields: 0
Leading/trailing whitespace: 0 records
Lengths in characters (pass --model to count tokens): min 14, median 19, p95 22, max 23, mean 18.6
""",
    "zh": """tests/data/palace_qa.json：20 条记录，格式正确
记录数：20
完全重复：0 条
同问不同答：0
空字段：0
首尾有空白：0 条
长度（字符数；加 --model 可统计 token 数）：最小 14，中位数 19，P95 22，最大 23，平均 18.6
"""}
HISTOGRAM = """  14-14 ###### 1
  15-15 ############ 2
  16-16 ###### 1
  17-17 ################## 3
  18-18 ############ 2
  19-19 ############################## 5
  20-20 ###### 1
  21-21 ############ 2
  22-22 ############ 2
  23-23 ###### 1
"""


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_data_check_prints_the_whole_report(lang, workspace):
    result = studio("data", "check", PALACE_QA.relative_to(ROOT), env_home=workspace, lang=lang)
    assert (result.returncode, result.stdout, result.stderr) == (0, DATA_CHECK[lang] + HISTOGRAM, "")


DRY_RUN = {
    "en": """Model: WS/models/demo-tiny
Trainable parameters: 23,552 of 282,944 (8.32%)
Training examples: 102
Steps per epoch: 13
Total optimizer steps: 325
Memory estimate (float32, gradient checkpointing off): 0.6 GB (weights 0.0 GB, lora+optimizer 0.0 GB, activations 0.1 GB, runtime 0.5 GB)
Disk: about 452.9 KB a checkpoint, up to 4 at once, and the adapter 234.5 KB: about 2.0 MB in all; FREE free at WS/runs
Note: gradient_checkpointing auto: off (about 0.6 GB without it, RAM GB of RAM)
Note: No bf16 GPU here, so float32; on a bf16 GPU this run needs about 0.6 GB.
""",
    "zh": """模型：WS/models/demo-tiny
可训练参数：23,552 / 282,944（8.32%）
训练样本：102 个
每轮步数：13
总优化步数：325
显存（或内存）估算（float32，梯度检查点关闭）：0.6 GB（权重 0.0 GB，LoRA 与优化器 0.0 GB，激活 0.1 GB，运行时 0.5 GB）
磁盘：每个检查点约 452.9 KB，同时最多 4 个，加上适配器 234.5 KB，共约 2.0 MB；WS/runs 剩余 FREE
注：梯度检查点 gradient_checkpointing auto：关闭（不开约需 0.6 GB，内存共有 RAM GB）
注：这台机器没有支持 bf16 的 GPU，因此用 float32；在支持 bf16 的 GPU 上，这次训练约需 0.6 GB。
"""}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_dry_run_of_a_preset_by_name(lang, demo_model_dir, workspace):
    shutil.copytree(demo_model_dir, workspace / "models" / "demo-tiny")  # built once per session
    result = studio("train", "demo-tiny", "--dry-run", env_home=workspace, lang=lang)
    assert result.returncode == 0, result.stderr
    out = shown(result.stdout, workspace)  # and this machine's memory, as RAM:
    out = re.sub(r"\d+(\.\d+)? GB of RAM", "RAM GB of RAM", re.sub(r"内存共有 \d+(\.\d+)? GB", "内存共有 RAM GB", out))
    out = re.sub(r"[\d.]+ [KMG]?B free at", "FREE free at", re.sub(r"剩余 [\d.]+ [KMG]?B", "剩余 FREE", out))  # its disk
    assert (out, result.stderr) == (DRY_RUN[lang], "")


# Names and terms a Chinese text keeps as they are: ours (the product), file formats, and ML terms.
ZH_TERMS = frozenset({"LoRA", "Studio", "YAML", "token", "ID", "GPU", "Ctrl", "D", "B", "KB", "MB", "GB",
                      "Hugging", "Face", "ModelScope", "X"})
# What a message names rather than says: quoted text, commands and flags with their value, variables,
# and paths, file names and ids (ASCII runs with a '.', '/', '_', '=' or '-' in them).
NAMES = re.compile(r"'[^']*'|`[^`]*`|python studio\.py [\w-]+|--[\w-]+(?: [a-z][\w-]*)?|\$?[A-Z][A-Z_]{2,}\b"
                   r"|[A-Za-z0-9*]*[./_=\\-][A-Za-z0-9_./=*\\-]*")


@pytest.mark.parametrize("area", ["cli", "hub"])
def test_a_chinese_user_reads_no_english_words_of_ours(area):
    from lora_studio.i18n import CATALOGUE

    english = {}
    for key, texts in CATALOGUE.items():
        if key.startswith(area + "."):
            zh = re.sub(r"\{[^{}]*\}", "X", texts["zh"])  # a parameter is a name
            words = set(re.findall(r"[A-Za-z]+", NAMES.sub(" ", zh))) - ZH_TERMS
            if words:
                english[key] = sorted(words)
            assert not re.search(r"[\u4e00-\u9fff]", texts["en"]), key  # and an English one no Chinese
    assert english == {}


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["train", "missing.yaml"], "error: missing.yaml: config file not found."),
    (["train", "no-such-preset"], "error: presets: no preset called 'no-such-preset'."),
    (["train", "presets/demo-tiny.yaml", "--set", "r=0"], "'r' is 0, outside the allowed range [1, 1024]"),
    (["chat", "--adapter", "nowhere"], "nowhere: no adapter here"),
    (["data", "check", "nope.json"], "nope.json"),
    (["chat", "--adapter", "nowhere", "--top-p", "1.5"], "chat: 'top_p' is 1.5, outside the allowed range"),
    (["train", "presets/demo-tiny.yaml", "--set", "model_name_or_path=Someone/Unknown-Model", "--dry-run"],
     "python studio.py download Someone/Unknown-Model"),
])
def test_user_errors_exit_non_zero_without_traceback(args, message, workspace):
    result = studio(*args, env_home=workspace, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_debug_shows_the_traceback_of_our_own_errors_too(workspace):
    result = studio("train", "missing.yaml", env_home=workspace, debug=True)
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "lora_studio.errors.ConfigError" in result.stderr
    assert result.stderr.endswith("error: missing.yaml: config file not found. Check the path, or pick one from "
                                  "presets/ (a preset's name such as demo-tiny works too).\n")


def test_the_workspace_flag_wins_over_the_environment_before_or_after_the_command(tmp_path, workspace):
    flagged = tmp_path / "flagged"
    write_run(flagged, "flag-run", [progress(1, 3.0, 1_700_000_000.0)])
    for args in (["--workspace", flagged, "runs"], ["runs", "--workspace", flagged]):
        result = studio(*args, env_home=workspace)
        assert result.returncode == 0 and result.stdout.startswith("flag-run "), result.stderr
    assert not workspace.exists()  # nothing was written to the environment's workspace


def test_lang_flag_overrides_lang_and_reaches_every_command(workspace):
    result = studio("runs", "--lang", "zh", env_home=workspace, lang="en")
    assert result.stdout == "还没有运行。这样开始一个：python studio.py train demo-tiny\n"
    result = studio("--lang", "en", "runs", env_home=workspace, lang="zh")
    assert result.stdout.startswith("No runs yet.")


# --- how arguments become library calls (in this process) ---------------------------------------
def test_chat_flags_are_generated_from_the_sampling_fields(ws):
    parser = cli.build_parser("en")
    args = parser.parse_args(["chat", "--adapter", "run", "--top-k", "7", "--max-new-tokens", "12"])
    from lora_studio.cli_commands import sampling_from_args

    assert sampling_from_args(args) == SamplingConfig(top_k=7, max_new_tokens=12)
    chat = parser._subparsers._group_actions[0].choices["chat"]  # noqa: SLF001 - argparse's own registry
    flags = {action.dest: action for action in chat._actions}  # noqa: SLF001
    for spec in dataclasses.fields(SamplingConfig):
        action = flags[spec.name]
        assert action.option_strings == ["--" + spec.name.replace("_", "-")]
        assert action.default == spec.default and action.type is type(spec.default)
        assert action.help.startswith(spec.metadata["help"].replace("%", "%%"))


def test_the_default_command_is_the_studio():
    commands = ("train", "runs", "studio")
    assert cli._with_default_command([], commands) == ["studio"]
    assert cli._with_default_command(["--port", "1"], commands) == ["studio", "--port", "1"]
    assert cli._with_default_command(["--workspace", "w", "--port", "1"], commands) == [
        "--workspace", "w", "studio", "--port", "1"]
    assert cli._with_default_command(["--lang=zh", "runs"], commands) == ["--lang=zh", "runs"]
    assert cli._with_default_command(["--help"], commands) == ["--help"]


def test_requested_language_is_read_before_parsing():
    assert cli.requested_language(["runs", "--lang", "zh"], {}) == "zh"
    assert cli.requested_language(["--lang=en", "runs"], {"LANG": "zh_CN.UTF-8"}) == "en"
    assert cli.requested_language(["runs"], {"LANG": "zh_CN.UTF-8"}) == "zh"
    assert cli.requested_language(["runs"], {}) == "en"


# --- training end to end -------------------------------------------------------------------------
def test_train_then_chat(demo_model_dir, tmp_path, workspace):
    config = write_config(tmp_path / "run.yaml", demo_model_dir)
    result = studio("train", config, "--set", "run_name=cli-run", "--set", "max_steps=4", env_home=workspace)
    assert result.returncode == 0, result.stderr
    run_dir = workspace / "runs" / "cli-run"
    assert result.stdout.startswith(f"Run directory: {run_dir}\n")
    assert result.stdout.endswith(f"Run completed at step 4, final loss {_final_loss(run_dir):.4f}.\n"
                                  f"Adapter: {run_dir / 'adapter'}\nRun directory: {run_dir}\n")
    assert "Traceback" not in result.stderr and "4/4" in result.stderr  # tqdm's bar reached the end

    chat = studio("chat", "--adapter", run_dir, "--prompt", "你是谁？", "--temperature", "0", env_home=workspace)
    assert chat.returncode == 0, chat.stderr
    assert "> 你是谁？" in chat.stdout and "base model" in chat.stdout and "tuned" in chat.stdout
    chat_zh = studio("chat", "--adapter", run_dir, "--prompt", "你是谁？", "--temperature", "0",
                     env_home=workspace, lang="zh")
    assert "基础模型" in chat_zh.stdout and "微调后" in chat_zh.stdout and "base model" not in chat_zh.stdout

    interactive = studio("chat", "--adapter", run_dir, "--temperature", "0", env_home=workspace,
                         input="你好\n\n")
    assert interactive.returncode == 0 and "> 你好" in interactive.stdout

    runs = studio("runs", env_home=workspace)
    assert re.search(r"cli-run\s+completed\s+step 4/4", runs.stdout)


def _final_loss(run_dir: Path) -> float:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["kind"] == "finished"][-1]["loss"]


def test_training_failure_is_reported_not_raised(demo_model_dir, tmp_path, workspace):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "ok"}\n{"instruction": "x", "output": \n', encoding="utf-8")
    config = write_config(tmp_path / "run.yaml", demo_model_dir, data_files=[str(bad)])
    result = studio("train", config, env_home=workspace)
    assert result.returncode == 1 and "bad.jsonl" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")


def test_torchrun_two_ranks_take_the_same_steps(demo_model_dir, tmp_path, workspace):
    config = write_config(tmp_path / "ddp.yaml", demo_model_dir, run_name="ddp", max_steps=4)
    env = {**os.environ, "LORA_STUDIO_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--standalone", "studio.py", "train", str(config), "--lang", "en"], cwd=ROOT, env=env,
                            text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = dict(re.findall(r"\[rank (\d)\] (\d+ optimizer steps, LoRA weight checksum [\d.]+)", result.stdout))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"] and ranks["0"].startswith("4 optimizer")
    assert [p.name for p in (workspace / "runs").iterdir()] == ["ddp"]  # rank 1 created nothing
    assert result.stdout.count("LoRA: ") == 1 and "Traceback" not in result.stderr  # rank 0 speaks for both
    events = (workspace / "runs" / "ddp" / "events.jsonl").read_text().splitlines()
    assert sum('"kind": "progress"' in line for line in events) == 4  # one writer, each step once
