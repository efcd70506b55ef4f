"""The studio web app: one gr.Blocks with five tabs over the library, and how it is launched.

    studio = Studio(lang=None)
    demo = build_app(studio)
    launch(demo, studio, host="127.0.0.1", port=7860)

Nothing heavy is imported here: torch, transformers and peft load inside handlers, the first time a
tab needs a tokenizer or a model, so the page is up in seconds.
"""

from __future__ import annotations

import gradio as gr

from ..errors import ConfigError
from . import tab_chat, tab_data, tab_model, tab_params, tab_train
from .dataset_view import sample_path
from .form import ConfigForm
from .i18n import build_i18n, language_of, say
from .state import Studio

CSS = """
.studio-progress progress { width: 70%; height: 14px; vertical-align: middle; }
.studio-error { color: #b42318; font-weight: 600; white-space: pre-wrap; }
#train-status-text { margin-top: 4px; line-height: 1.7; }
#share-note:empty { display: none; }
.probe { min-width: 0 !important; }
.studio-title p { font-size: 1.5em; font-weight: 700; margin: 0; }
"""


def initial_config(studio: Studio):
    """What the page opens with: the demo preset on the bundled sample."""
    return tab_params.config_from_preset("demo-tiny", studio.workspace).replace(data_files=[sample_path()])


def build_app(studio: Studio):
    i18n = build_i18n(studio.lang)
    config = initial_config(studio)
    form = ConfigForm(i18n)
    with gr.Blocks(title="LoRA Studio") as demo:
        gr.Markdown(i18n("title"), elem_id="studio-title", elem_classes=["studio-title"])
        gr.Markdown(i18n("subtitle"), elem_id="studio-subtitle")
        share_note = gr.Markdown(elem_id="share-note")
        with gr.Tabs():
            with gr.Tab(i18n("tab.model"), id="model", elem_id="tab-model"):
                model_ui = tab_model.build(studio, form, i18n)
            with gr.Tab(i18n("tab.data"), id="data", elem_id="tab-data"):
                data_ui = tab_data.build(studio, form, i18n, config)
            with gr.Tab(i18n("tab.params"), id="params", elem_id="tab-params"):
                params_ui = tab_params.build(studio, form, i18n, config)
            with gr.Tab(i18n("tab.train"), id="train", elem_id="tab-train"):
                train_ui = tab_train.build(studio, i18n)
            with gr.Tab(i18n("tab.chat"), id="chat", elem_id="tab-chat") as chat_tab:
                chat_ui = tab_chat.build(studio, i18n)
        tab_model.wire(studio, model_ui, form)
        tab_data.wire(studio, data_ui, form)
        tab_params.wire(studio, params_ui, form)
        tab_train.wire(studio, train_ui, form)
        tab_chat.wire(studio, chat_ui)
        chat_tab.select(chat_ui.on_refresh_click, chat_ui.adapter, chat_ui.adapter, api_visibility="private")

        def on_page_load(request: gr.Request):
            if studio.share_note is None:
                return ""
            key, url = studio.share_note
            return f"**{say(key, language_of(request, studio.lang))} {url}**"

        demo.load(on_page_load, None, share_note, api_visibility="private")
        demo.load(lambda: tab_model.on_load(studio), None,
                  [model_ui.name, model_ui.local, model_ui.progress, model_ui.timer], api_visibility="private")
        demo.load(train_ui.on_timer_tick, train_ui.cursor,
                  [train_ui.status, train_ui.plot, train_ui.log, train_ui.runs, train_ui.resume_run,
                   train_ui.cursor], api_visibility="private")
        demo.load(params_ui.on_settings_change, [params_ui.preset, *form.inputs()],
                  [params_ui.yaml, params_ui.cli], api_visibility="private")
        demo.load(chat_ui.on_refresh_click, chat_ui.adapter, chat_ui.adapter, api_visibility="private")
        # the table first; the doctor and inspector need the tokenizer (on a first start the demo
        # model is still being built then), so they follow once it is there
        demo.load(data_ui.on_records_load, [data_ui.page, *form.inputs()],
                  [data_ui.table, data_ui.page, data_ui.pages], api_visibility="private").then(
            data_ui.on_load_click, form.inputs(),
                  [data_ui.table, data_ui.page, data_ui.pages, data_ui.doctor, data_ui.histogram],
                  api_visibility="private").then(
            data_ui.on_inspect_click, [data_ui.record, *form.inputs()], [data_ui.tokens, data_ui.summary],
            api_visibility="private")
    demo.studio_i18n = i18n
    return demo


def launch(demo, studio: Studio, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           auth: tuple[str, str] | None = None, block: bool = True):
    """Start the server; returns (local_url, share_url). With share and no link, the page says so."""
    try:
        _app, local_url, share_url = demo.launch(
            server_name=host, server_port=port, share=share, auth=auth, prevent_thread_lock=True,
            i18n=demo.studio_i18n, theme=gr.themes.Soft(), css=CSS, footer_links=["api"], quiet=True,
            show_error=True)
    except OSError as exc:  # Gradio says "Cannot find empty port" when another program holds it
        if port is None or "port" not in str(exc).lower():
            raise
        raise ConfigError(f"port {port} on {host} is already in use (is the studio already running? then "
                          f"open http://{host}:{port})", "--port",
                          f"Start this one with --port {port + 1}, or stop the other program.") from None
    # our own start-up lines: Gradio's would tell a studio user to edit launch() for a share link
    print(f"LoRA Studio is running at {local_url}  (Ctrl-C to stop)", flush=True)
    if not share:
        print("To share it over the internet: python studio.py --share --auth USER:PASS", flush=True)
    if share:
        if share_url:
            print(f"Public link (login required): {share_url}", flush=True)
            studio.share_note = ("msg.share_ok", share_url)
        else:
            studio.share_note = ("msg.share_failed", local_url)
            print(f"\nNo public share link could be made (no internet, or the tunnel is blocked). "
                  f"The studio still runs at {local_url}", flush=True)
    if block:
        demo.block_thread()
    return local_url, share_url
