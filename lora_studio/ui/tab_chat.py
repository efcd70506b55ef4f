"""对话 Chat tab: one message, two streaming answers side by side, base model and base + adapter.

The studio's ChatEngine keeps one base model in memory for both panes; picking another adapter of
the same base attaches it without reloading. The sampling widgets are generated from SamplingConfig's
metadata and shared by both panes; the handler takes them by name and builds the SamplingConfig by
keyword. The adapter and the model are read only inside the studio's roots (ui/paths.py), and the
model's own code runs only with the model tab's consent checkbox on, whatever the run's files say.

Around the panes (ui/chat_extras.py): a blind A/B mode with votes kept in the run folder, an
adapter-strength slider that answers the last question again at the new strength (same seed, no
reload), Markdown/JSON export of the conversation, and probe buttons from the chosen run's probe set.
What a session remembers beyond its widgets is a `ChatSession` in a gr.State, hidden from the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from .. import ab
from ..chat import STRENGTH_RANGE, ZHEN_HUAN_SYSTEM_PROMPT, check_strength, run_config_for
from ..config import RunConfig
from ..errors import ModelError
from ..i18n import msg
from ..models import DEMO_MODEL
from ..runs import RunInfo, adapter_dirs
from ..sampling import SamplingConfig, sampling_from_dict
from . import chat_extras as extras
from .chat_extras import ChatSession, flatten
from .form import SettingsForm
from .i18n import language_of, say
from .paths import adapter_folder, check_model
from .state import Studio
from .tab_model import TRUST


def adapter_choices(runs: list[RunInfo], lang: str) -> list[tuple[str, str]]:
    """(label, folder) of every adapter and checkpoint in the workspace, newest run first; a run's
    checkpoint marked best (probes.best_adapter) comes first in its run, so the picker defaults to it."""
    from ..probes import best_adapter

    choices = []
    for run in runs:
        best = best_adapter(run.path)
        for folder in sorted(adapter_dirs(run.path), key=lambda f: f != best):
            label = run.name if folder.name == "adapter" else f"{run.name} / {folder.name}"
            label = say("evaluation.best_label", lang, label=label) if folder == best else label
            choices.append((f"{label} · {say(f'status.{run.status}', lang)}", str(folder)))
    return choices


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


@dataclass(frozen=True)
class Turn:
    """One question as the page asks it, with everything that decides its answers."""
    message: str
    adapter: str
    model: str
    system: str
    trusted: bool
    settings: SamplingConfig


def answer_turn(studio: Studio, session: ChatSession, turn: Turn, panes: tuple, lang: str):
    """Yield (message box, left pane, right pane, session) while both answers stream.

    Each pane continues its own conversation: the same questions, its own earlier answers. While
    blind, those are the session's and the panes show this round only, in its shuffled order.
    """
    if not prepare(studio, turn.adapter, turn.model, turn.trusted):
        if session.blind:
            raise ab.ABError(msg("chat.ab_needs_adapter"), msg("chat.ab_where"), msg("chat.ab_needs_adapter_fix"))
        gr.Warning(say("ui.no_adapter", lang))
    question = {"role": "user", "content": turn.message}
    base, tuned = (session.base, session.tuned) if session.blind else (list(panes[0] or []), list(panes[1] or []))
    extras.note_question(session, flatten(tuned))
    if session.blind:
        session.rounds.start(turn.message, strength=session.strength)
    base_talk, tuned_talk = flatten(base) + [question], flatten(tuned) + [question]
    result = None
    for result in studio.chat.compare(tuned_talk, turn.system, turn.settings, base_messages=base_talk,
                                      strength=session.strength):
        if session.blind:
            yield ("", *extras.blind_panes(session, question, result.base, result.tuned, lang), session)
        else:
            yield ("", base + [question, {"role": "assistant", "content": result.base}],
                   tuned + [question, {"role": "assistant", "content": result.tuned}], session)
    if session.blind and result is not None:
        session.base = base_talk + [{"role": "assistant", "content": result.base}]
        session.tuned = tuned_talk + [{"role": "assistant", "content": result.tuned}]
        session.rounds.finish(base=result.base, tuned=result.tuned)


def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    ui.session = gr.State(ChatSession)  # a fresh one (and its own shuffle generator) per page session
    with gr.Row():
        ui.adapter = gr.Dropdown([], label=labels("ui.chat_adapter"), scale=4, elem_id="chat-adapter",
                                 allow_custom_value=True)
        ui.model = gr.Textbox(label=labels("ui.chat_model"), scale=3)
        ui.refresh = gr.Button(labels("ui.chat_refresh"), size="sm", scale=1)
    ui.system = gr.Textbox(ZHEN_HUAN_SYSTEM_PROMPT, label=labels("ui.chat_system"), lines=1, elem_id="chat-system")
    with gr.Row():
        ui.blind = gr.Checkbox(False, label=labels("chat.blind"), info=labels("chat.blind_info"), scale=1,
                               elem_id="chat-blind")
        low, high = STRENGTH_RANGE
        ui.strength = gr.Slider(low, high, value=1.0, step=0.05, label=labels("chat.strength"),
                                info=labels("chat.strength_info"), scale=2, elem_id="chat-strength")
    with gr.Row():
        ui.base = gr.Chatbot(label=labels("ui.chat_base"), height=360, elem_id="chat-base")
        ui.tuned = gr.Chatbot(label=labels("ui.chat_tuned"), height=360, elem_id="chat-tuned")
    with gr.Column(visible=False, elem_id="chat-votes") as ui.votes:
        with gr.Row():
            ui.vote_left = gr.Button(labels("chat.vote_a"), elem_id="vote-a")
            ui.vote_tie = gr.Button(labels("chat.vote_tie"), elem_id="vote-tie")
            ui.vote_right = gr.Button(labels("chat.vote_b"), elem_id="vote-b")
        ui.vote_status = gr.Markdown(elem_id="vote-status")
        ui.tally = gr.Markdown(elem_id="vote-tally")
    with gr.Row():
        ui.message = gr.Textbox(label=labels("ui.chat_input"), placeholder=labels("ui.chat_placeholder"), scale=6,
                                elem_id="chat-input", show_label=False, container=False)
        ui.send = gr.Button(labels("ui.chat_send"), variant="primary", scale=1, elem_id="chat-send")
        ui.clear = gr.Button(labels("ui.chat_clear"), scale=1)
    with gr.Row():
        prompts = extras.probe_prompts(studio, None)
        ui.probes = [gr.Button(prompts[i] if i < len(prompts) else "", visible=i < len(prompts), size="sm",
                               elem_classes=["probe"]) for i in range(extras.PROBE_BUTTONS)]
    ui.sampling = SettingsForm(labels, SamplingConfig, sampling_from_dict, prefix="sampling")
    with gr.Accordion(labels("ui.chat_sampling"), open=False):
        with gr.Row():
            ui.sampling.render_group("sampling")
    with gr.Accordion(labels("chat.export"), open=False):
        with gr.Row():
            ui.export_md = gr.Button(labels("chat.export_md"), size="sm", elem_id="chat-export-md")
            ui.export_json = gr.Button(labels("chat.export_json"), size="sm", elem_id="chat-export-json")
        ui.export_file = gr.File(label=labels("chat.export_file"), interactive=False, elem_id="chat-export-file")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, trust) -> None:
    """`trust` is the model tab's consent checkbox."""
    def turn_of(message, adapter, model, system, sampling: dict) -> Turn:
        trusted = sampling.pop(TRUST, False) is True
        settings = ui.sampling.to_config(sampling)  # a bad value is reported before a model is loaded
        return Turn(str(message or "").strip(), str(adapter or ""), str(model or ""), system, trusted, settings)

    @studio.guarded
    def on_send_click(message, adapter, model, system, base_history, tuned_history, session,
                      request: gr.Request, **sampling):
        turn = turn_of(message, adapter, model, system, sampling)
        if not turn.message:
            raise ModelError(msg("ui.empty_message"), msg("ui.where_chat"), msg("ui.empty_message_fix"))
        session = session if isinstance(session, ChatSession) else ChatSession()
        yield from answer_turn(studio, session, turn, (base_history, tuned_history), language_of(request, studio.lang))

    @studio.guarded
    def on_strength_release(strength, adapter, model, system, base_history, tuned_history, session,
                            request: gr.Request, **sampling):
        """Answer the last question again at the new strength: same seed, same model, nothing reloaded."""
        session.strength = check_strength(strength)
        base, tuned = flatten(base_history), flatten(tuned_history)
        asked = [i for i, m in enumerate(tuned) if m["role"] == "user"]
        if session.blind or not asked:  # blind: the new strength is for the next question
            yield gr.update(), gr.update(), gr.update(), session
            return
        turn = turn_of(tuned[asked[-1]]["content"], adapter, model, system, sampling)
        base_asked = [i for i, m in enumerate(base) if m["role"] == "user"] or [len(base)]
        panes = (base[:base_asked[-1]], tuned[:asked[-1]])
        for _message, *rest in answer_turn(studio, session, turn, panes, language_of(request, studio.lang)):
            yield (gr.update(), *rest)  # the message box keeps what is being typed

    @studio.guarded
    def on_strength_input(strength, session):
        session.strength = check_strength(strength)
        return session

    def on_refresh_click(current, request: gr.Request):
        choices = adapter_choices(studio.scan_runs(), language_of(request, studio.lang))
        values = [value for _, value in choices]
        return gr.update(choices=choices, value=current if current in values else (values[0] if values else None))

    def on_adapter_change(adapter, session, request: gr.Request):
        session.rounds.current = None  # the open round's answers came from the adapter before
        tally = extras.tally_text(studio, adapter, language_of(request, studio.lang)) if session.blind else ""
        return *extras.probe_updates(extras.probe_prompts(studio, adapter)), tally, session

    def on_clear_click(session):
        session = session if isinstance(session, ChatSession) else ChatSession()
        session.base, session.tuned, session.times, session.rounds.current = [], [], [], None
        return [], [], "", session

    @studio.guarded
    def on_blind_change(blind, adapter, base_history, tuned_history, session, request: gr.Request):
        lang = language_of(request, studio.lang)
        return *extras.blind_switch(studio, session, blind, (base_history, tuned_history), adapter, lang), session

    def voter(choice: str):
        @studio.guarded
        def on_vote_click(adapter, session, request: gr.Request):
            return *extras.vote(studio, session, choice, adapter, language_of(request, studio.lang)), session
        on_vote_click.__name__ = f"on_vote_{choice}_click"
        return on_vote_click

    def exporter(fmt: str):
        @studio.guarded
        def on_export_click(base_history, tuned_history, adapter, model, system, session, request: gr.Request,
                            **sampling):
            sampling.pop(TRUST, None)
            settings = ui.sampling.to_config(sampling)
            folder = adapter_folder(studio.roots, adapter) if adapter else None
            model = str(model or "").strip() or (run_config_for(folder).model_name_or_path if folder else DEMO_MODEL)
            details = dict(system_prompt=str(system or ""), model=model, adapter=str(folder or ""),
                           sampling=settings.to_dict())
            return extras.export_conversation(session, (base_history, tuned_history), details, fmt,
                                              language_of(request, studio.lang))
        on_export_click.__name__ = f"on_export_{fmt}_click"
        return on_export_click

    private = {"api_visibility": "private"}
    chat_inputs = [ui.message, ui.adapter, ui.model, ui.system, ui.base, ui.tuned, ui.session]
    chat_outputs = [ui.message, ui.base, ui.tuned, ui.session]
    sampling_kwargs = {**ui.sampling.widgets_by_name(), TRUST: trust}
    # raw values (preprocess=False): a slider's own check would refuse out-of-range values in English,
    # before the sampling check names the field (see form.py); histories are flattened either way
    chat = dict(fn=on_send_click, inputs=chat_inputs, outputs=chat_outputs, inputs_kwargs=sampling_kwargs,
                preprocess=False)
    ui.send.click(**chat, api_name="chat_compare")
    ui.message.submit(**chat, **private)
    for button in ui.probes:
        button.click(lambda value: value, button, ui.message, **private).success(**chat, **private)
    ui.strength.input(on_strength_input, [ui.strength, ui.session], ui.session, **private)
    ui.strength.release(on_strength_release, [ui.strength, *chat_inputs[1:]], chat_outputs,
                        inputs_kwargs=sampling_kwargs, preprocess=False, **private)
    ui.clear.click(on_clear_click, ui.session, [ui.base, ui.tuned, ui.message, ui.session], api_name="chat_clear")
    ui.refresh.click(on_refresh_click, ui.adapter, ui.adapter, api_name="list_adapters")
    ui.adapter.change(on_adapter_change, [ui.adapter, ui.session], [*ui.probes, ui.tally, ui.session], **private)
    ui.blind.change(on_blind_change, [ui.blind, ui.adapter, ui.base, ui.tuned, ui.session],
                    [ui.base, ui.tuned, ui.votes, ui.vote_status, ui.tally, ui.session], **private)
    vote_outputs = [ui.base, ui.tuned, ui.vote_status, ui.tally, ui.session]
    for button, choice in ((ui.vote_left, "left"), (ui.vote_tie, "tie"), (ui.vote_right, "right")):
        button.click(voter(choice), [ui.adapter, ui.session], vote_outputs, **private)
    export_inputs = [ui.base, ui.tuned, ui.adapter, ui.model, ui.system, ui.session]
    for button, fmt in ((ui.export_md, "md"), (ui.export_json, "json")):
        button.click(exporter(fmt), export_inputs, ui.export_file, inputs_kwargs=sampling_kwargs, preprocess=False,
                     **private)
    ui.on_refresh_click = on_refresh_click
    ui.handlers = SimpleNamespace(send=on_send_click, strength=on_strength_release, adapter=on_adapter_change,
                                  clear=on_clear_click, blind=on_blind_change, export=exporter, vote=voter)
