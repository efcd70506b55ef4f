"""The studio's words in English and Chinese, handed to Gradio's own `gr.I18n`.

Static labels are `gr.I18n` keys that the browser translates (it follows the browser's language, or
the one forced with `--lang`). Setting labels and help come from RunConfig's field metadata, so a new
setting needs no entry here. Texts that handlers compose at run time (status lines) pick a language per
request with `language_of`, from the same table.
"""

from __future__ import annotations

from ..config import fields_by_name

LANGUAGES = ("en", "zh")
# Browser locales that get each language's table; svelte-i18n falls back from zh-CN to zh itself.
LOCALES = {"en": ("en",), "zh": ("zh", "zh-CN", "zh-Hans")}

# key: (English, Chinese)
TEXTS = {
    "title": ("LoRA Studio", "LoRA 微调工作室"),
    "subtitle": ("Fine-tune a chat model with LoRA, then chat with it side by side with the base model. "
                 "Start with the demo model and the bundled Zhen Huan sample: everything works offline.",
                 "用 LoRA 微调对话模型，再把微调结果和原模型并排对话。可以先用演示模型和自带的甄嬛样例数据，全程离线可用。"),
    "tab.model": ("Model", "模型"),
    "tab.data": ("Dataset", "数据"),
    "tab.params": ("LoRA & training", "参数"),
    "tab.train": ("Train", "训练"),
    "tab.chat": ("Chat", "对话"),
    # model tab
    "model.catalog": ("Model catalog", "模型目录"),
    "model.local": ("Models in the workspace", "工作区中的模型"),
    "model.facts": ("About the chosen model", "所选模型信息"),
    "model.download": ("Download", "下载"),
    "model.cancel": ("Cancel download", "取消下载"),
    "model.refresh": ("Refresh", "刷新"),
    "model.download_status": ("Download", "下载状态"),
    # data tab
    "data.sample": ("Use the bundled sample", "使用自带样例"),
    "data.upload": ("Upload dataset files (JSON / JSONL)", "上传数据文件（JSON / JSONL）"),
    "data.load": ("Load and check", "加载并检查"),
    "data.table": ("Records", "记录"),
    "data.page": ("Page", "页码"),
    "data.prev": ("◀ Previous", "◀ 上一页"),
    "data.next": ("Next ▶", "下一页 ▶"),
    "data.doctor": ("Dataset doctor", "数据体检"),
    "data.histogram": ("Token lengths (bars past the cutoff will be truncated)",
                       "token 长度分布（超过截断长度的部分会被截断）"),
    "data.inspector": ("Inspector: a record exactly as it is trained", "检查器：样本训练时的真实样子"),
    "data.record": ("Record number", "记录编号"),
    "data.inspect": ("Show", "显示"),
    "data.tokens": ("Tokens (highlighted: trained; ⟂ marks the end token)", "Token（高亮为参与训练的部分；⟂ 标出结束符）"),
    # params tab
    "params.preset": ("Preset", "预设"),
    "params.load_preset": ("Load preset", "载入预设"),
    "params.preset_name": ("Save current settings as preset named", "将当前设置保存为预设，名称"),
    "params.save_preset": ("Save preset", "保存预设"),
    "params.yaml": ("Settings as YAML (only what differs from the defaults)", "YAML 形式的设置（仅列出与默认值不同的项）"),
    "params.cli": ("The same run from the command line", "等价的命令行"),
    "params.estimate": ("Pre-flight estimate", "训练前估算"),
    "params.run_estimate": ("Estimate", "估算"),
    "group.template": ("Chat template", "对话模板"),
    "group.lora": ("LoRA", "LoRA"),
    "group.training": ("Training", "训练"),
    "group.output": ("Output", "输出"),
    # train tab
    "train.start": ("Start training", "开始训练"),
    "train.stop": ("Stop", "停止"),
    "train.resume": ("Resume the selected run", "继续所选运行"),
    "train.status": ("Status", "状态"),
    "train.loss": ("Loss", "损失"),
    "train.log": ("Log", "日志"),
    "train.history": ("Runs", "运行记录"),
    "train.run": ("Run to resume (stopped or interrupted, with a checkpoint)", "要继续的运行（已停止或中断且有检查点）"),
    "train.refresh": ("Refresh", "刷新"),
    # chat tab
    "chat.adapter": ("Adapter (a run or one of its checkpoints)", "适配器（某次运行或其检查点）"),
    "chat.model": ("Base model (empty: the one the run was trained on)", "基础模型（留空：该运行所用的模型）"),
    "chat.refresh": ("Refresh", "刷新"),
    "chat.system": ("System prompt", "系统提示词"),
    "chat.base": ("基础模型 · base", "基础模型 · base"),
    "chat.tuned": ("微调后 · tuned", "微调后 · tuned"),
    "chat.input": ("Message", "消息"),
    "chat.placeholder": ("Type a message and press Enter", "输入消息后按回车"),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear", "清空"),
    "chat.probes": ("Probe prompts", "快捷提问"),
    "chat.sampling": ("Sampling (shared by both panes)", "采样设置（两侧共用）"),
    "chat.max_new_tokens": ("Max new tokens", "最大生成长度"),
    "chat.temperature": ("Temperature (0 = greedy)", "温度（0 为贪心）"),
    "chat.top_p": ("Top-p", "Top-p"),
    "chat.top_k": ("Top-k", "Top-k"),
    "chat.repetition_penalty": ("Repetition penalty", "重复惩罚"),
    "chat.seed": ("Seed", "随机种子"),
    # status texts composed by handlers
    "msg.no_run": ("No training run yet. Set things up in the other tabs and press Start.",
                   "还没有训练。在其他标签页设置好后点击“开始训练”。"),
    "msg.step": ("Step", "步"),
    "msg.epoch": ("epoch", "轮"),
    "msg.eta": ("ETA", "预计剩余"),
    "msg.elapsed": ("elapsed", "已用"),
    "msg.lr": ("learning rate", "学习率"),
    "msg.tps": ("tokens/s", "tokens/秒"),
    "msg.state": ("state", "状态"),
    "msg.started": ("Training started", "训练已开始"),
    "msg.stopping": ("Stopping after the current step; the adapter will be saved.",
                     "将在当前步结束后停止，适配器会被保存。"),
    "msg.nothing_to_stop": ("No training run is active.", "当前没有进行中的训练。"),
    "msg.share_failed": ("No public share link could be made (no internet, or the tunnel is blocked). "
                         "The studio still works on this machine at", "无法生成公开分享链接（没有网络或隧道被阻止）。本机仍可访问："),
    "msg.share_ok": ("Public link (protected by the login you set):", "公开链接（受你设置的登录保护）："),
    "msg.no_adapter": ("No adapter chosen: both panes answer with the base model. Train a run first, or pick one.",
                       "未选择适配器：两侧都是基础模型的回答。请先训练或选择一个运行。"),
}


def field_label(name: str, lang: str) -> str:
    meta = fields_by_name()[name].metadata
    return meta.get("label_zh", name) if lang == "zh" else name


def field_help(name: str, lang: str) -> str:
    meta = fields_by_name()[name].metadata
    return meta.get("help_zh", "") if lang == "zh" else meta.get("help", "")


def table(lang: str) -> dict[str, str]:
    """Every key for one language: the fixed texts plus a label and help per RunConfig field."""
    column = LANGUAGES.index(lang)
    words = {key: pair[column] for key, pair in TEXTS.items()}
    for name in fields_by_name():
        words[f"field.{name}"] = field_label(name, lang)
        words[f"help.{name}"] = field_help(name, lang)
    return words


def build_i18n(forced: str | None = None):
    """The `gr.I18n` for the app; with `forced`, every locale gets that language's words."""
    import gradio as gr

    translations = {}
    for lang, locales in LOCALES.items():
        words = table(forced or lang)
        for locale in locales:
            translations[locale] = words
    return gr.I18n(**translations)


def language_of(request, forced: str | None = None) -> str:
    """'zh' or 'en' for a handler's texts: the forced language, else the browser's Accept-Language."""
    if forced:
        return forced
    header = ""
    if request is not None:
        headers = getattr(request, "headers", None) or {}
        header = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def say(key: str, lang: str) -> str:
    return TEXTS[key][LANGUAGES.index(lang)]
