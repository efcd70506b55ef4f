"""RunConfig: the one list of every setting a fine-tuning run has.

Field names are the YAML keys, the CLI `--set` keys and the studio's widget keys, spelled the way
peft and transformers spell them. Each field's metadata carries its group, help text (English and
Chinese) and bounds, so the CLI, the studio and the validation all read the same facts.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .i18n import msg
from .settings import check_mapping, fields_of, setting

# data, not our words: what the Zhen Huan sample answers, and questions it does not contain
DEFAULT_PROBES = ("你是谁？", "你的父亲是谁？", "皇上最近可好？", "你喜欢吃什么点心？", "今天天气怎么样？",
                  "Who are you?")
DEFAULT_CONTROLS = ("一年有几个月？", "水在多少摄氏度沸腾？", "请把“你好”翻译成英文。")
GROUPS = ("model", "data", "template", "lora", "training", "hardware", "evaluation", "output")


@dataclass
class RunConfig:
    # --- model -----------------------------------------------------------------------------------
    model_name_or_path: str = field(default="demo-tiny", metadata=setting(
        "model", "Local folder, a model in the workspace, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct. "
        "'demo-tiny' is the small offline demo model the studio builds itself.",
        "本地文件夹、工作区中的模型，或模型库 ID（如 Qwen/Qwen2.5-0.5B-Instruct）。'demo-tiny' 是工作室自带的离线演示小模型。",
        free_text=True, widget="dropdown", pace=True, label_zh="模型"))
    model_source: str = field(default="modelscope", metadata=setting(
        "model", "Where a hub id is downloaded from.", "模型库 ID 从哪里下载。",
        choices=["modelscope", "huggingface"], label_zh="下载源"))
    model_revision: str = field(default="", metadata=setting(
        "model", "Branch, tag or commit of the hub model; empty means the default branch.",
        "模型的分支、标签或提交；留空表示默认分支。", free_text=True, label_zh="版本"))
    dtype: str = field(default="auto", metadata=setting(
        "model", "Weight precision. 'auto' uses bfloat16 on a GPU that supports it, otherwise float32.",
        "权重精度。'auto' 在支持的 GPU 上用 bfloat16，否则用 float32。",
        choices=["auto", "float32", "bfloat16", "float16"], pace=True, label_zh="精度"))
    # --- data ------------------------------------------------------------------------------------
    data_files: list = field(default_factory=lambda: ["data/huanhuan_sample.json"], metadata=setting(
        "data", "Dataset files (alpaca, chat messages or character scripts; JSON, JSONL, CSV or Parquet).",
        "数据集文件（alpaca、对话消息或角色剧本格式；JSON、JSONL、CSV 或 Parquet）。", kind="paths", lines=2, label_zh="数据文件"))
    data_format: str = field(default="auto", metadata=setting(
        "data", "Record format; 'auto' detects it from the first record: alpaca, messages (chat), or script "
        "(a character's role card with dialogue lines: role_name, role_info, dialog).",
        "记录格式；'auto' 根据第一条记录自动识别：alpaca、messages（对话消息）或 script（角色卡加台词："
        "role_name、role_info、dialog）。",
        choices=["auto", "alpaca", "messages", "script"], label_zh="数据格式"))
    system_prompt: str = field(default="", metadata=setting(
        "data", "System prompt for records that carry none of their own.",
        "没有自带系统提示词的记录所使用的系统提示词。", free_text=True, lines=3, label_zh="系统提示词"))
    cutoff_len: int = field(default=1024, metadata=setting(
        "data", "Maximum tokens per example; longer examples are truncated (the answer keeps its start).",
        "每个样本的最大 token 数；更长的样本会被截断（保留回答的开头）。", min=16, max=131072,
        pace=True, label_zh="截断长度"))
    val_size: float = field(default=0.0, metadata=setting(
        "data", "Fraction of records held out for validation loss (0 = none).",
        "留作验证集的记录比例（0 表示不留）。", min=0.0, max=0.5, label_zh="验证集比例"))
    dedupe: bool = field(default=True, metadata=setting(
        "data", "Drop exact duplicate records before training.", "训练前去除完全重复的记录。",
        label_zh="去重"))
    max_samples: int = field(default=0, metadata=setting(
        "data", "Use at most this many records (0 = all).", "最多使用多少条记录（0 表示全部）。",
        min=0, max=10_000_000, label_zh="最大样本数"))
    # --- template --------------------------------------------------------------------------------
    template: str = field(default="auto", metadata=setting(
        "template", "Chat template. 'auto' uses the tokenizer's own; name a built-in only for models "
        "that ship none.", "对话模板。'auto' 使用分词器自带的模板；仅当模型没有模板时才指定内置模板。",
        choices=["auto", "index", "chatml"], label_zh="对话模板"))
    chat_template_kwargs: dict = field(default_factory=dict, metadata=setting(
        "template", "Extra switches for the chat template, used in training and chat alike, as YAML, "
        "e.g. enable_thinking: false. Empty: a template with an enable_thinking switch gets it off.",
        "传给对话模板的额外开关（YAML），训练与对话都使用，例如 enable_thinking: false。留空时，带 enable_thinking "
        "开关的模板会自动关闭思考。", kind="mapping", lines=2, label="Chat template switches",
        label_zh="模板开关"))
    # --- LoRA ------------------------------------------------------------------------------------
    r: int = field(default=8, metadata=setting(
        "lora", "LoRA rank: the size of the low-rank update. Higher learns more and costs more.",
        "LoRA 秩：低秩更新的大小。越大可学得越多，开销也越大。", min=1, max=1024, label_zh="LoRA 秩 r"))
    lora_alpha: int = field(default=16, metadata=setting(
        "lora", "LoRA scaling numerator: the update is scaled by lora_alpha / r.",
        "LoRA 缩放系数：更新按 lora_alpha / r 缩放。", min=1, max=4096, label_zh="LoRA alpha"))
    lora_dropout: float = field(default=0.05, metadata=setting(
        "lora", "Dropout on the LoRA input during training.", "训练时 LoRA 输入上的 dropout。",
        min=0.0, max=0.9, label_zh="LoRA dropout"))
    target_modules: Any = field(default="all-linear", metadata=setting(
        "lora", "Modules that get LoRA: 'all-linear' finds every linear layer except the output head, "
        "or list names such as q_proj, v_proj.",
        "加 LoRA 的模块：'all-linear' 自动找出除输出层外的所有线性层，或列出名称如 q_proj, v_proj。",
        kind="modules", suggestions=["all-linear", "q_proj, v_proj", "q_proj, k_proj, v_proj, o_proj", "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"], label_zh="目标模块"))
    use_rslora: bool = field(default=False, metadata=setting(
        "lora", "Rank-stabilised LoRA: scale by lora_alpha / sqrt(r).",
        "秩稳定 LoRA：按 lora_alpha / sqrt(r) 缩放。", label_zh="rsLoRA"))
    use_dora: bool = field(default=False, metadata=setting(
        "lora", "Weight-decomposed LoRA (DoRA): often better, slower to train.",
        "权重分解 LoRA（DoRA）：效果常更好，训练更慢。", label_zh="DoRA"))
    # --- training --------------------------------------------------------------------------------
    learning_rate: float = field(default=1e-4, metadata=setting(
        "training", "Peak learning rate of the optimizer.", "优化器的峰值学习率。",
        min=1e-8, max=1.0, step=1e-5, label_zh="学习率"))
    num_train_epochs: float = field(default=3.0, metadata=setting(
        "training", "Passes over the training data.", "训练数据的遍历轮数。",
        min=0.01, max=1000.0, label_zh="训练轮数"))
    per_device_train_batch_size: int = field(default=4, metadata=setting(
        "training", "Examples per forward pass on each device.", "每个设备每次前向的样本数。",
        min=1, max=1024, pace=True, label_zh="批大小"))
    gradient_accumulation_steps: int = field(default=4, metadata=setting(
        "training", "Forward passes summed into one optimizer step; effective batch = batch x this.",
        "累积多少次前向再更新一次参数；有效批大小 = 批大小 x 此值。", min=1, max=1024,
        pace=True, label_zh="梯度累积"))
    gradient_checkpointing: Any = field(default="auto", metadata=setting(
        "training", "Recompute activations to save memory. 'auto' turns it on only when the batch "
        "would not fit in memory otherwise.", "重算激活以节省显存。'auto' 仅在显存不够时开启。",
        choices=["auto", True, False], pace=True, label_zh="梯度检查点"))
    lr_scheduler_type: str = field(default="cosine", metadata=setting(
        "training", "How the learning rate changes over the run.", "学习率在训练中的变化方式。",
        choices=["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                 "polynomial", "inverse_sqrt"], label_zh="学习率调度"))
    warmup_steps: float = field(default=0.0, metadata=setting(
        "training", "Linear warm-up: a whole number of steps, or a fraction (< 1) of all steps.",
        "线性预热：整数表示步数，小于 1 的小数表示占总步数的比例。", min=0.0, max=1_000_000.0,
        label_zh="预热步数"))
    weight_decay: float = field(default=0.0, metadata=setting(
        "training", "AdamW weight decay.", "AdamW 权重衰减。", min=0.0, max=1.0, label_zh="权重衰减"))
    max_grad_norm: float = field(default=1.0, metadata=setting(
        "training", "Clip gradients to this norm (0 = no clipping).", "梯度裁剪的范数上限（0 表示不裁剪）。",
        min=0.0, max=1000.0, label_zh="梯度裁剪"))
    padding_free: bool = field(default=True, metadata=setting(
        "training", "Concatenate a batch's examples without padding (exact per-example attention). "
        "Falls back to padding for models that cannot do it.",
        "将一个批次的样本无填充拼接（每个样本的注意力保持独立）。不支持的模型自动回退为填充。",
        pace=True, label_zh="无填充批处理"))
    logging_steps: int = field(default=10, metadata=setting(
        "training", "Log loss and learning rate every this many optimizer steps.",
        "每多少个优化步记录一次损失和学习率。", min=1, max=100_000, label_zh="日志间隔"))
    save_steps: int = field(default=100, metadata=setting(
        "training", "Save a checkpoint every this many optimizer steps.", "每多少个优化步保存一次检查点。",
        min=1, max=1_000_000, label_zh="保存间隔"))
    save_total_limit: int = field(default=3, metadata=setting(
        "training", "Keep at most this many checkpoints (0 = keep all).", "最多保留多少个检查点（0 表示全部保留）。",
        min=0, max=1000, label_zh="检查点上限"))
    seed: int = field(default=42, metadata=setting(
        "training", "Random seed for data order, dropout and LoRA initialisation.",
        "随机种子：影响数据顺序、dropout 和 LoRA 初始化。", min=0, max=2**32 - 1, label_zh="随机种子"))
    max_steps: int = field(default=-1, metadata=setting(
        "training", "Stop after this many optimizer steps (-1 = run all epochs).",
        "训练到这么多优化步就停止（-1 表示跑完所有轮）。", min=-1, max=10_000_000, label_zh="最大步数"))
    early_stopping_patience: int = field(default=0, metadata=setting(
        "training", "Stop when the validation loss has not improved for this many evaluations "
        "(needs val_size > 0; 0 = off). The best adapter so far is kept.",
        "验证集损失连续这么多次评估没有改善就提前停止（需要验证集比例 > 0；0 表示关闭）。保留至今最好的适配器。",
        min=0, max=1000, label_zh="早停耐心"))
    # --- hardware: quantisation and more processes -----------------------------------------------
    quantization: str = field(default="none", metadata=setting(
        "hardware", "Load the frozen base weights quantised with bitsandbytes (QLoRA): 4bit is NF4 with "
        "double quantisation and bf16 compute, 8bit is LLM.int8(). Saves most of the weights' memory.",
        "用 bitsandbytes 量化加载冻结的基座权重（QLoRA）：4bit 为 NF4 双重量化、bf16 计算，8bit 为 LLM.int8()。"
        "可省下权重的大部分显存。", choices=["none", "8bit", "4bit"], pace=True, label="Quantisation",
        label_zh="量化"))
    launcher: str = field(default="auto", metadata=setting(
        "hardware", "How the run is started: 'auto' uses torchrun when more than one GPU is visible, "
        "'none' trains in the studio's own process, 'torchrun' or 'accelerate' start one process per device.",
        "训练如何启动：'auto' 在看到多块 GPU 时用 torchrun；'none' 在工作室自己的进程里训练；'torchrun' 或 "
        "'accelerate' 为每个设备启动一个进程。", choices=["auto", "none", "torchrun", "accelerate"],
        label="Launcher", label_zh="启动方式"))
    num_processes: int = field(default=0, metadata=setting(
        "hardware", "Processes (devices) per node for torchrun/accelerate; 0 = every visible GPU.",
        "每个节点的进程（设备）数，用于 torchrun/accelerate；0 表示所有可见 GPU。", min=0, max=1024,
        label="Processes per node", label_zh="每节点进程数"))
    accelerate_config: str = field(default="", metadata=setting(
        "hardware", "An accelerate config file (DDP, FSDP, DeepSpeed ZeRO-2/3) for the 'accelerate' launcher; "
        "empty uses plain DDP.", "'accelerate' 启动方式使用的 accelerate 配置文件（DDP、FSDP、DeepSpeed ZeRO-2/3）；"
        "留空则用普通 DDP。", free_text=True, label="Accelerate config", label_zh="accelerate 配置"))
    nnodes: int = field(default=1, metadata=setting(
        "hardware", "Machines taking part in the run; more than 1 shows the command to start on each.",
        "参与训练的机器数；大于 1 时显示每台机器上要运行的命令。", min=1, max=1024, label="Nodes",
        label_zh="节点数"))
    rdzv_endpoint: str = field(default="", metadata=setting(
        "hardware", "Rendezvous endpoint of the first node for a multi-node run, as host:port, e.g. 10.0.0.1:29500.",
        "多机训练时第一个节点的汇合地址，格式为“主机:端口”，例如 10.0.0.1:29500。", free_text=True, label="Rendezvous endpoint",
        label_zh="汇合地址"))
    # --- evaluation ------------------------------------------------------------------------------
    probe_prompts: list = field(default_factory=lambda: list(DEFAULT_PROBES), metadata=setting(
        "evaluation", "Questions every checkpoint and every export answers greedily, one a line: "
        "the probe grid, the chat tab's quick prompts and the export's proof.",
        "每个检查点和每次导出都要贪心回答的问题，每行一个：用于探针网格、对话页的快捷提问和导出校验。",
        kind="lines", lines=4, label="Probe prompts", label_zh="探针问题"))
    persona_markers: list = field(default_factory=lambda: ["臣妾", "本宫"], metadata=setting(
        "evaluation", "Words that show an answer stays in character, one a line.",
        "表明回答仍在角色中的词，每行一个。", kind="lines", lines=2, label="Persona markers",
        label_zh="角色标志词"))
    leakage_words: list = field(default_factory=lambda: ["AI", "人工智能", "语言模型", "assistant"], metadata=setting(
        "evaluation", "Words that show an answer left the character, one a line.",
        "表明回答脱离了角色的词，每行一个。", kind="lines", lines=2, label="Leakage words", label_zh="出戏词"))
    control_prompts: list = field(default_factory=lambda: list(DEFAULT_CONTROLS), metadata=setting(
        "evaluation", "General questions the base and the tuned model both answer, to show what "
        "fine-tuning made the model forget, one a line.",
        "基座模型和微调模型都要回答的通用问题，用来看出微调让模型忘掉了什么，每行一个。",
        kind="lines", lines=3, label="Control questions", label_zh="对照问题"))
    report_to: str = field(default="none", metadata=setting(
        "output", "Experiment tracker the Trainer reports to; each is an optional package "
        "(tensorboard, swanlab, wandb, mlflow, trackio).",
        "训练过程上报到的实验跟踪工具；每个都是可选安装的包（tensorboard、swanlab、wandb、mlflow、trackio）。",
        choices=["none", "tensorboard", "swanlab", "wandb", "mlflow", "trackio"], label="Tracker",
        label_zh="实验跟踪"))
    # --- output ----------------------------------------------------------------------------------
    run_name: str = field(default="", metadata=setting(
        "output", "Name of the run folder under the workspace's runs/; empty picks one from the model "
        "and the time. An existing run is never overwritten.",
        "工作区 runs/ 下的运行目录名；留空则按模型和时间自动命名。已有的运行不会被覆盖。", free_text=True, label_zh="运行名称"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def diff_from_defaults(self) -> dict:
        """Only the settings that differ from RunConfig() - what a preset file holds."""
        default = RunConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(default, k) != v}

    def replace(self, **changes: Any) -> "RunConfig":
        return from_dict({**self.to_dict(), **changes})


# Every setting's name as a constant, for code that must name one (a widget, an error's `where`):
# `Setting.learning_rate == "learning_rate"`, and a misspelt name fails at import, not at run time.
Setting = enum.StrEnum("Setting", {f.name: f.name for f in dataclasses.fields(RunConfig)})


def fields_by_name() -> dict[str, dataclasses.Field]:
    return fields_of(RunConfig)


def fields_in_group(group: str) -> list[str]:
    """Setting names of one group, in field order (what a tab or a section of the form shows)."""
    return [name for name, spec in fields_by_name().items() if spec.metadata["group"] == group]


def fields_with(fact: str) -> list[str]:
    """Setting names whose metadata has `fact` set (e.g. 'pace')."""
    return [name for name, spec in fields_by_name().items() if spec.metadata.get(fact)]


# Keys that were settings once and are dropped wherever a file or mapping still has them. Running a
# model's own code is the user's choice in this session (--trust-remote-code, the studio's checkbox),
# never a file's: a run folder or preset saying `trust_remote_code: true` must not turn it on.
RETIRED_KEYS = frozenset({"trust_remote_code"})


def from_dict(values: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from a mapping, rejecting unknown keys and out-of-range values."""
    if isinstance(values, dict):
        values = {key: value for key, value in values.items() if key not in RETIRED_KEYS}
    return RunConfig(**check_mapping(RunConfig, values, where))


def load_yaml(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(msg("config.file_not_found"), str(path), msg("config.file_not_found_fix"))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        from .errors import first_line

        raise ConfigError(msg("config.not_yaml", detail=first_line(exc)), str(path)) from None
    return from_dict(values, where=str(path))


def dump_yaml(config: RunConfig, only_changes: bool = False) -> str:
    values = config.diff_from_defaults() if only_changes else config.to_dict()
    return yaml.safe_dump(values, allow_unicode=True, sort_keys=False)


def save_yaml(config: RunConfig, path: str | Path, only_changes: bool = False) -> Path:
    """Write the settings as YAML; a crash mid-write leaves the old file or the new one, never half."""
    from .files import write_text_atomic

    return write_text_atomic(Path(path), dump_yaml(config, only_changes))


def apply_overrides(config: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply CLI `--set key=value` assignments; values are read as YAML (numbers, lists, booleans)."""
    values = config.to_dict()
    free_text = set(fields_with("free_text"))
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(msg("config.bad_assignment", item=item), "--set")
        if key in RETIRED_KEYS:  # typed by the user, so say where consent is given instead
            raise ConfigError(msg("config.remote_code_not_a_setting", key=key), "--set",
                              msg("config.remote_code_not_a_setting_fix"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        values[key] = raw if key in free_text else value  # free text: keep exactly what was typed
    return from_dict(values, where="--set")
