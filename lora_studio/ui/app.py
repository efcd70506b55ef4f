"""The studio web app: one gr.Blocks with five tabs over the library, and how it is launched.

    studio = Studio(workspace, lang=None)
    demo = build_app(studio)
    launch(demo, studio, host="127.0.0.1", port=7860)

Nothing heavy is imported here: torch, transformers and peft load inside handlers, the first time a
tab needs a tokenizer or a model, so the page is up in seconds.
"""

from __future__ import annotations

import gradio as gr

from ..config import Setting
from ..i18n import DEFAULT_LANGUAGE, text
from ..presets import starting_config
from types import SimpleNamespace

from . import demo_panel, tab_chat, tab_compare, tab_data, tab_eval, tab_export, tab_model, tab_params, tab_train
from .dataset_view import sample_path
from .form import SettingsForm
from .i18n import Labels, language_of, say
from .state import Studio

CSS = """
.studio-progress progress { width: 70%; height: 14px; vertical-align: middle; }
.studio-error { color: #b42318; font-weight: 600; white-space: pre-wrap; }
#train-status-text { margin-top: 4px; line-height: 1.7; }
#share-note:empty { display: none; }
.probe { min-width: 0 !important; }
.studio-title p { font-size: 1.5em; font-weight: 700; margin: 0; }
#loss-hint { padding: 2em 1em; color: var(--body-text-color-subdued); }
/* Gradio 6.31 titles every toast with its type in English ("Error"); ours leads the message */
.toast-body .toast-title { display: none; }
"""
TABS = ("model", "data", "params", "train", "chat", "evaluate", "compare", "export")
# tabs built as build(studio, labels) and wired as wire(studio, ui, context)
LATER_TABS = (("evaluate", tab_eval), ("compare", tab_compare), ("export", tab_export))


def initial_config(studio: Studio):
    """What the page opens with: the demo preset on the bundled sample."""
    return starting_config(studio.workspace).replace(**{Setting.data_files: [sample_path()]})


def build_app(studio: Studio):
    labels = Labels(studio.lang)
    config = initial_config(studio)
    form = SettingsForm(labels)
    with gr.Blocks(title="LoRA Studio") as demo:
        gr.Markdown(labels("ui.title"), elem_id="studio-title", elem_classes=["studio-title"])
        gr.Markdown(labels("ui.subtitle"), elem_id="studio-subtitle")
        share_note = gr.Markdown(elem_id="share-note")
        tabs = {}
        with gr.Tabs():
            for name in TABS:
                tabs[name] = gr.Tab(labels(f"ui.tab_{name}"), id=name, elem_id=f"tab-{name}")
            with tabs["model"]:
                model_ui = tab_model.build(studio, form, labels)
            with tabs["data"]:
                data_ui = tab_data.build(studio, form, labels, config)
            with tabs["params"]:
                params_ui = tab_params.build(studio, form, labels, config)
            with tabs["train"]:
                train_ui = tab_train.build(studio, labels)
            with tabs["chat"]:
                chat_ui = tab_chat.build(studio, labels)
                chat_ui.demo = demo_panel.build(studio, labels)
            later = {}
            for name, module in LATER_TABS:
                with tabs[name]:
                    later[name] = module.build(studio, labels)
        tab_model.wire(studio, model_ui, form)
        tab_data.wire(studio, data_ui, form, model_ui.trust)
        tab_params.wire(studio, params_ui, form)
        tab_train.wire(studio, train_ui, form, model_ui.trust)
        tab_chat.wire(studio, chat_ui, model_ui.trust)
        context = SimpleNamespace(form=form, trust=model_ui.trust, params=params_ui, chat=chat_ui, tabs=tabs,
                                  demo=demo)
        for name, module in LATER_TABS:
            module.wire(studio, later[name], context)
        demo_panel.wire(studio, chat_ui.demo, context)
        wire_page_load(demo, studio, form, share_note, (model_ui, data_ui, params_ui, train_ui, chat_ui))
        tabs["chat"].select(chat_ui.on_refresh_click, chat_ui.adapter, chat_ui.adapter, api_visibility="private")
    demo.studio_i18n = labels.gradio
    return demo


def wire_page_load(demo, studio: Studio, form, share_note, uis) -> None:
    """What a page fills in when it opens: everything worded per reader, and the current state."""
    model_ui, data_ui, params_ui, train_ui, chat_ui = uis
    settings = form.widgets_by_name()
    private = {"api_visibility": "private"}

    def on_share_note_load(request: gr.Request):
        if studio.share_note is None:
            return ""
        key, url = studio.share_note
        return f"**{say(key, language_of(request, studio.lang), url=url)}**"

    demo.load(on_share_note_load, None, share_note, **private)
    demo.load(model_ui.on_page_load, None, model_ui.page_load_outputs, inputs_kwargs=model_ui.page_load_inputs,
              **private)
    demo.load(train_ui.on_timer_tick, train_ui.cursor, train_ui.poll_outputs, **private)
    demo.load(params_ui.on_settings_change, params_ui.preset, [params_ui.yaml, params_ui.cli],
              inputs_kwargs=settings, **private)
    demo.load(chat_ui.on_refresh_click, chat_ui.adapter, chat_ui.adapter, **private)
    demo.load(data_ui.on_page_load, None, [data_ui.histogram, data_ui.tokens], **private)
    # the table first; the doctor and inspector need the tokenizer (on a first start the demo
    # model is still being built then), so they follow once it is there, each only when the step
    # before it worked: a failure is one message, not one per step
    demo.load(data_ui.on_records_load, data_ui.page, [data_ui.table, data_ui.page, data_ui.pages],
              inputs_kwargs=settings, **private).success(
        data_ui.on_load_click, None, [data_ui.table, data_ui.page, data_ui.pages, data_ui.doctor, data_ui.histogram],
        inputs_kwargs=data_ui.with_trust, **private).success(
        data_ui.on_inspect_click, data_ui.record, [data_ui.tokens, data_ui.summary],
        inputs_kwargs=data_ui.with_trust, **private)


def launch(demo, studio: Studio, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           auth: list[tuple[str, str]] | tuple[str, str] | None = None, block: bool = True,
           console: str | None = None):
    """Start the server; returns (local_url, share_url). With share and no link, the page says so.

    `auth` is one (user, password) or a list of them. Uploads over the studio's limit are refused by
    Gradio before they are stored (and by the upload handler too); failed logins go through the
    studio's limiter (access.LoginGuard). `console` is the language of the lines printed here (the
    CLI's); by default the page's forced one.
    """
    from .server import serve

    lang = console or studio.lang or DEFAULT_LANGUAGE
    local_url, share_url = serve(demo, studio.logins, auth, server_name=host, server_port=port, share=share,
                                 i18n=demo.studio_i18n, theme=gr.themes.Soft(), css=CSS, footer_links=["api"],
                                 show_error=True, max_file_size=studio.max_upload_bytes)
    # our own start-up lines: Gradio's would tell a studio user to edit launch() for a share link
    print(text("ui.running_at", lang, url=local_url), flush=True)
    if not share:
        print(text("ui.share_how", lang), flush=True)
    elif share_url:
        print(text("ui.share_link", lang, url=share_url), flush=True)
        studio.share_note = ("ui.share_ok", share_url)
    else:
        studio.share_note = ("ui.share_failed", local_url)
        print("\n" + text("ui.share_none", lang, url=local_url), flush=True)
    if block:
        demo.block_thread()
    return local_url, share_url
