"""对话 Chat tab: one message, two streaming answers side by side, base model and base + adapter.

The studio's ChatEngine keeps one base model in memory for both panes; picking another adapter of
the same base attaches it without reloading. Sampling settings and the seed are shared by both panes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..chat import ZHEN_HUAN_SYSTEM_PROMPT, Sampling, resolve_adapter_dir, run_config_for
from ..config import RunConfig
from ..errors import ModelError
from ..runs import adapter_dirs, list_runs
from .i18n import language_of, say
from .state import Studio, guarded

PROBES = ["你是谁？", "你好", "你的父亲是谁？", "皇上最近可好？", "Who are you?"]


def adapter_choices() -> list[tuple[str, str]]:
    """(label, folder) of every adapter and checkpoint in the workspace, newest run first."""
    choices = []
    for run in list_runs():
        for folder in adapter_dirs(run.path):
            label = run.name if folder.name == "adapter" else f"{run.name} / {folder.name}"
            choices.append((f"{label} · {run.status}", str(folder)))
    return choices


def flatten(history: list) -> list[dict]:
    """Chatbot history (content may be a list of parts in Gradio 6) as plain role/content messages."""
    messages = []
    for item in history or []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        if isinstance(content, str) and item.get("role") in ("user", "assistant"):
            messages.append({"role": item["role"], "content": content})
    return messages


def prepare(studio: Studio, adapter: str | None, model: str | None) -> bool:
    """Load the base model (once) and attach the adapter; False when chatting without one."""
    engine = studio.chat
    if adapter:
        folder = resolve_adapter_dir(Path(adapter))
        config = run_config_for(folder)
        if model and model.strip():
            config = config.replace(model_name_or_path=model.strip())
        engine.load_base(config)
        engine.set_adapter(folder)
        return True
    engine.load_base(RunConfig(model_name_or_path=(model or "").strip() or "demo-tiny"))
    engine.set_adapter(None)
    return False


def build(studio: Studio, i18n) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        ui.adapter = gr.Dropdown([], label=i18n("chat.adapter"), scale=4, elem_id="chat-adapter",
                                 allow_custom_value=True)
        ui.model = gr.Textbox(label=i18n("chat.model"), scale=3)
        ui.refresh = gr.Button(i18n("chat.refresh"), size="sm", scale=1)
    ui.system = gr.Textbox(ZHEN_HUAN_SYSTEM_PROMPT, label=i18n("chat.system"), lines=1)
    with gr.Row():
        ui.base = gr.Chatbot(label=i18n("chat.base"), height=360, elem_id="chat-base")
        ui.tuned = gr.Chatbot(label=i18n("chat.tuned"), height=360, elem_id="chat-tuned")
    with gr.Row():
        ui.message = gr.Textbox(label=i18n("chat.input"), placeholder=i18n("chat.placeholder"), scale=6,
                                elem_id="chat-input", show_label=False, container=False)
        ui.send = gr.Button(i18n("chat.send"), variant="primary", scale=1, elem_id="chat-send")
        ui.clear = gr.Button(i18n("chat.clear"), scale=1)
    with gr.Row():
        ui.probes = [gr.Button(text, size="sm", elem_classes=["probe"]) for text in PROBES]
    with gr.Accordion(i18n("chat.sampling"), open=False):
        with gr.Row():
            defaults = Sampling()
            ui.sampling = [
                gr.Number(defaults.max_new_tokens, label=i18n("chat.max_new_tokens"), precision=0, minimum=1,
                          maximum=4096),
                gr.Slider(0, 2, defaults.temperature, step=0.05, label=i18n("chat.temperature")),
                gr.Slider(0, 1, defaults.top_p, step=0.05, label=i18n("chat.top_p")),
                gr.Number(defaults.top_k, label=i18n("chat.top_k"), precision=0, minimum=0, maximum=1000),
                gr.Slider(1, 2, defaults.repetition_penalty, step=0.05, label=i18n("chat.repetition_penalty")),
                gr.Number(defaults.seed, label=i18n("chat.seed"), precision=0, minimum=0),
            ]
    return ui


def wire(studio: Studio, ui: SimpleNamespace) -> None:
    @guarded
    def on_send_click(request: gr.Request, message, adapter, model, system, base_history, tuned_history,
                      max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed):
        message = (message or "").strip()
        if not message:
            raise ModelError("the message is empty", "chat", "Type something, or click a probe prompt.")
        if not prepare(studio, adapter, model):
            gr.Warning(say("msg.no_adapter", language_of(request, studio.lang)))
        sampling = Sampling(int(max_new_tokens or 1), float(temperature), float(top_p), int(top_k or 0),
                            float(repetition_penalty), int(seed or 0))
        # each pane continues its own conversation: the same questions, its own earlier answers
        turn = {"role": "user", "content": message}
        base = list(base_history or []) + [turn]
        tuned = list(tuned_history or []) + [turn]
        for result in studio.chat.compare(flatten(tuned), system, sampling, base_messages=flatten(base)):
            yield ("", base + [{"role": "assistant", "content": result.base}],
                   tuned + [{"role": "assistant", "content": result.tuned}])

    def on_refresh_click(current):
        choices = adapter_choices()
        values = [value for _, value in choices]
        return gr.update(choices=choices, value=current if current in values else (values[0] if values else None))

    chat_inputs = [ui.message, ui.adapter, ui.model, ui.system, ui.base, ui.tuned, *ui.sampling]
    chat_outputs = [ui.message, ui.base, ui.tuned]
    ui.send.click(on_send_click, chat_inputs, chat_outputs, api_name="chat_compare")
    ui.message.submit(on_send_click, chat_inputs, chat_outputs, api_visibility="private")
    for button, text in zip(ui.probes, PROBES):
        button.click(lambda t=text: t, None, ui.message, api_visibility="private").then(
            on_send_click, chat_inputs, chat_outputs, api_visibility="private")
    ui.clear.click(lambda: ([], [], ""), None, [ui.base, ui.tuned, ui.message], api_name="chat_clear")
    ui.refresh.click(on_refresh_click, ui.adapter, ui.adapter, api_name="list_adapters")
    ui.on_refresh_click = on_refresh_click
