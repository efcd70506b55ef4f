"""对话 Chat tab: one message, two streaming answers side by side, base model and base + adapter.

The studio's ChatEngine keeps one base model in memory for both panes; picking another adapter of
the same base attaches it without reloading. The sampling widgets are generated from SamplingConfig's
metadata and shared by both panes; the handler takes them by name and builds the SamplingConfig by
keyword. The adapter and the model are read only inside the studio's roots (ui/paths.py), and the
model's own code runs only with the model tab's consent checkbox on, whatever the run's files say.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..chat import ZHEN_HUAN_SYSTEM_PROMPT, run_config_for
from ..config import RunConfig
from ..errors import ModelError
from ..i18n import msg
from ..models import DEMO_MODEL
from ..runs import RunInfo, adapter_dirs
from ..sampling import SamplingConfig, sampling_from_dict
from .form import SettingsForm
from .i18n import language_of, say
from .paths import adapter_folder, check_model
from .state import Studio
from .tab_model import TRUST

# data, not our words: questions the Zhen Huan sample answers, and one in another language
PROBES = ("你是谁？", "你好", "你的父亲是谁？", "皇上最近可好？", "Who are you?")


def adapter_choices(runs: list[RunInfo], lang: str) -> list[tuple[str, str]]:
    """(label, folder) of every adapter and checkpoint in the workspace, newest run first."""
    choices = []
    for run in runs:
        for folder in adapter_dirs(run.path):
            label = run.name if folder.name == "adapter" else f"{run.name} / {folder.name}"
            choices.append((f"{label} · {say(f'status.{run.status}', lang)}", str(folder)))
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


def prepare(studio: Studio, adapter: str | None, model: str | None, trust_remote_code: bool = False) -> bool:
    """Load the base model (once) and attach the adapter; False when chatting without one."""
    engine = studio.chat
    model = (model or "").strip()
    if model:
        check_model(studio.roots, model, studio.workspace)
    if adapter:
        folder = adapter_folder(studio.roots, adapter)
        config = run_config_for(folder)
        if not model:
            check_model(studio.roots, config.model_name_or_path, studio.workspace)  # the run's model
        engine.load_base(config.replace(model_name_or_path=model) if model else config,
                         trust_remote_code=trust_remote_code)
        engine.set_adapter(folder)
        return True
    engine.load_base(RunConfig(model_name_or_path=model or DEMO_MODEL), trust_remote_code=trust_remote_code)
    engine.set_adapter(None)
    return False


def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        ui.adapter = gr.Dropdown([], label=labels("ui.chat_adapter"), scale=4, elem_id="chat-adapter",
                                 allow_custom_value=True)
        ui.model = gr.Textbox(label=labels("ui.chat_model"), scale=3)
        ui.refresh = gr.Button(labels("ui.chat_refresh"), size="sm", scale=1)
    ui.system = gr.Textbox(ZHEN_HUAN_SYSTEM_PROMPT, label=labels("ui.chat_system"), lines=1, elem_id="chat-system")
    with gr.Row():
        ui.base = gr.Chatbot(label=labels("ui.chat_base"), height=360, elem_id="chat-base")
        ui.tuned = gr.Chatbot(label=labels("ui.chat_tuned"), height=360, elem_id="chat-tuned")
    with gr.Row():
        ui.message = gr.Textbox(label=labels("ui.chat_input"), placeholder=labels("ui.chat_placeholder"), scale=6,
                                elem_id="chat-input", show_label=False, container=False)
        ui.send = gr.Button(labels("ui.chat_send"), variant="primary", scale=1, elem_id="chat-send")
        ui.clear = gr.Button(labels("ui.chat_clear"), scale=1)
    with gr.Row():
        ui.probes = [gr.Button(probe, size="sm", elem_classes=["probe"]) for probe in PROBES]
    ui.sampling = SettingsForm(labels, SamplingConfig, sampling_from_dict, prefix="sampling")
    with gr.Accordion(labels("ui.chat_sampling"), open=False):
        with gr.Row():
            ui.sampling.render_group("sampling")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, trust) -> None:
    """`trust` is the model tab's consent checkbox."""
    @studio.guarded
    def on_send_click(message, adapter, model, system, base_history, tuned_history, request: gr.Request,
                      **sampling):
        trusted = sampling.pop(TRUST, False) is True
        settings = ui.sampling.to_config(sampling)  # a bad value is reported before a model is loaded
        message = str(message or "").strip()
        if not message:
            raise ModelError(msg("ui.empty_message"), msg("ui.where_chat"), msg("ui.empty_message_fix"))
        if not prepare(studio, str(adapter or ""), str(model or ""), trusted):
            gr.Warning(say("ui.no_adapter", language_of(request, studio.lang)))
        # each pane continues its own conversation: the same questions, its own earlier answers
        turn = {"role": "user", "content": message}
        base = list(base_history or []) + [turn]
        tuned = list(tuned_history or []) + [turn]
        for result in studio.chat.compare(flatten(tuned), system, settings, base_messages=flatten(base)):
            yield ("", base + [{"role": "assistant", "content": result.base}],
                   tuned + [{"role": "assistant", "content": result.tuned}])

    def on_refresh_click(current, request: gr.Request):
        choices = adapter_choices(studio.scan_runs(), language_of(request, studio.lang))
        values = [value for _, value in choices]
        return gr.update(choices=choices, value=current if current in values else (values[0] if values else None))

    chat_inputs = [ui.message, ui.adapter, ui.model, ui.system, ui.base, ui.tuned]
    chat_outputs = [ui.message, ui.base, ui.tuned]
    # raw values (preprocess=False): a slider's own check would refuse out-of-range values in English,
    # before the sampling check names the field (see form.py); histories are flattened either way
    chat = dict(fn=on_send_click, inputs=chat_inputs, outputs=chat_outputs,
                inputs_kwargs={**ui.sampling.widgets_by_name(), TRUST: trust}, preprocess=False)
    ui.send.click(**chat, api_name="chat_compare")
    ui.message.submit(**chat, api_visibility="private")
    for button, probe in zip(ui.probes, PROBES):
        button.click(lambda p=probe: p, None, ui.message, api_visibility="private").success(
            **chat, api_visibility="private")
    ui.clear.click(lambda: ([], [], ""), None, [ui.base, ui.tuned, ui.message], api_name="chat_clear")
    ui.refresh.click(on_refresh_click, ui.adapter, ui.adapter, api_name="list_adapters")
    ui.on_refresh_click = on_refresh_click
