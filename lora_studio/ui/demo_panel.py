"""发布演示 Publish demo: the chat tab's panel that starts, shows and stops chat-only demos (demo_app.py).

It publishes the adapter chosen in the chat tab, with the tab's system prompt and sampling settings,
as a page of its own on its own port (0: the first free one from 7860), listening on this machine
only; "make a public link" adds a Gradio share link, which needs a visitor login (the studio's rule,
ui/cli.check_exposure). Each demo loads its own ChatEngine, so the studio's chat and the demo never
wait for each other (see demo_app.py). Running demos are kept in `studio.demos` by run name, one per
run; the panel lists them with their local and public links, and stops the chosen one, which closes
its server. With studio logins a demo is stopped only by the user who published it. Start and stop
take turns (one concurrency group), so two clicks never start two demos of one run.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..errors import ConfigError, JobError, ModelError
from ..i18n import msg
from .access import user_of
from .cli import check_exposure, parse_auth
from .demo_app import DemoServer, demo_spec
from .i18n import language_of, say
from .paths import adapter_folder
from .state import Studio
from .tab_model import TRUST

LOOPBACK = "127.0.0.1"  # a published demo listens on this machine; others reach it by its share link
PORTS = (0, 65535)


def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Accordion(labels("demo.panel_title"), open=False, elem_id="demo-panel"):
        gr.Markdown(labels("demo.panel_intro"))
        with gr.Row():
            ui.side_by_side = gr.Checkbox(False, label=labels("demo.side_by_side"), elem_id="demo-side-by-side")
            ui.share = gr.Checkbox(False, label=labels("demo.share"), elem_id="demo-share")
            ui.login = gr.Textbox(label=labels("demo.login"), placeholder=labels("demo.login_placeholder"),
                                  type="password", elem_id="demo-login")
            ui.port = gr.Number(0, label=labels("demo.port"), info=labels("demo.port_info"), elem_id="demo-port")
        with gr.Row():
            ui.start = gr.Button(labels("demo.start"), variant="primary", elem_id="demo-start")
            ui.running = gr.Dropdown([], label=labels("demo.running"), allow_custom_value=True, elem_id="demo-running")
            ui.stop = gr.Button(labels("demo.stop"), variant="stop", elem_id="demo-stop")
        ui.status = gr.Markdown(elem_id="demo-status")
    return ui


def status_text(studio: Studio, lang: str) -> str:
    """Every running demo with its links, one line each."""
    lines = []
    for server in running_demos(studio).values():
        parts = [say("demo.status_line", lang, run=server.spec.run, checkpoint=server.spec.checkpoint,
                     url=server.local_url)]
        if server.login:
            parts.append(say("demo.status_login", lang))
        if server.share:
            parts.append(say("demo.status_share", lang, url=server.share_url) if server.share_url else
                         say("demo.status_share_failed", lang))
        lines.append("- " + " · ".join(parts))
    return "\n".join(lines) or say("demo.status_none", lang)


def running_demos(studio: Studio) -> dict:
    """studio.demos without the ones whose server has gone (closed another way)."""
    for run in [run for run, server in studio.demos.items() if not server.running]:
        studio.demos.pop(run, None)
    return dict(studio.demos)


def panel_logins(login) -> list[tuple[str, str]] | None:
    """The visitor login typed into the panel (USER:PASS), None when it is empty."""
    login = str(login or "").strip()
    try:
        return parse_auth(login or None)
    except ConfigError:
        raise ConfigError(msg("demo.login_format"), msg("demo.where_panel"), msg("demo.login_format_fix")) from None


def panel_port(value) -> int | None:
    """The port box's value: None for 0 (the first free one), else a port number."""
    try:
        port = float(value if value not in (None, "") else 0)
    except (TypeError, ValueError):
        port = -1.0
    if not (PORTS[0] <= port <= PORTS[1] and port == int(port)):
        raise ConfigError(msg("demo.bad_port", value=value), msg("demo.where_panel"))
    return int(port) or None


def wire(studio: Studio, ui: SimpleNamespace, context) -> None:
    """`context` is app.py's: the chat tab's widgets (`chat`), the consent checkbox (`trust`), the page (`demo`)."""
    chat = context.chat

    def refreshed(lang: str, chosen: str | None = None):
        names = list(running_demos(studio))
        return status_text(studio, lang), gr.update(choices=names, value=chosen if chosen in names else
                                                    (names[0] if names else None))

    @studio.guarded
    def on_publish_click(adapter, system, side_by_side, share, login, port, request: gr.Request, **sampling):
        lang = language_of(request, studio.lang)
        trusted = sampling.pop(TRUST, False) is True
        settings = chat.sampling.to_config(sampling)  # a bad value is said before a model loads
        auth, port = panel_logins(login), panel_port(port)
        try:
            check_exposure(LOOPBACK, share is True, auth, False)
        except ConfigError:  # the same rule, said in the panel's words
            raise ConfigError(msg("demo.panel_share_needs_auth"), msg("demo.where_panel"),
                              msg("demo.panel_login_fix")) from None
        if not str(adapter or "").strip():
            raise ModelError(msg("demo.pick_adapter"), msg("demo.where_panel"), msg("demo.pick_adapter_fix"))
        spec = demo_spec(adapter_folder(studio.roots, str(adapter)), system_prompt=str(system or "").strip() or None,
                         sampling=settings, panes="side-by-side" if side_by_side is True else "toggle",
                         lang=studio.lang)
        current = running_demos(studio).get(spec.run)
        if current is not None:
            raise JobError(msg("demo.already_running", run=spec.run, url=current.local_url), msg("demo.where_panel"),
                           msg("demo.already_running_fix"))
        server = DemoServer(spec, studio.workspace, trust_remote_code=trusted)
        server.start(host=LOOPBACK, port=port, share=share is True, auth=auth)
        with studio.owners.lock:
            studio.demos[spec.run] = server
            studio.owners.record(server, user_of(request))
        return refreshed(lang, spec.run)

    @studio.guarded
    def on_stop_click(run, request: gr.Request):
        lang = language_of(request, studio.lang)
        run = str(run or "").strip()
        server = running_demos(studio).get(run)
        if server is None:
            raise JobError(msg("demo.not_running", run=run), msg("demo.where_panel"), msg("demo.not_running_fix"))
        owner, user = studio.owners.owner(server), user_of(request)
        if owner is not None and owner != user:
            shown = owner or msg("ui.local_user")
            raise JobError(msg("demo.not_yours", run=run, owner=shown), msg("demo.where_panel"),
                           msg("ui.not_yours_fix", owner=shown))
        studio.demos.pop(run, None)
        server.stop()
        return refreshed(lang)

    def on_page_load(request: gr.Request):
        return refreshed(language_of(request, studio.lang))

    control = {"outputs": [ui.status, ui.running], "concurrency_id": "demo-control", "concurrency_limit": 1}
    # raw values, as the chat's own send (the sampling sliders are checked by the form, see form.py)
    ui.start.click(on_publish_click, [chat.adapter, chat.system, ui.side_by_side, ui.share, ui.login, ui.port],
                   inputs_kwargs={**chat.sampling.widgets_by_name(), TRUST: context.trust}, preprocess=False,
                   api_name="publish_demo", **control)
    ui.stop.click(on_stop_click, ui.running, api_name="stop_demo", **control)
    context.demo.load(on_page_load, None, [ui.status, ui.running], api_visibility="private")
