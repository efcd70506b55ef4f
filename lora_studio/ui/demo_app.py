"""A chat-only demo of one adapter: its own small Gradio app and server, for others to talk to a persona.

    spec = demo_spec(run_adapter(run_dir), sampling=SamplingConfig(), panes="toggle")
    server = DemoServer(spec, workspace).start(port=7861, share=True, auth=[("guest", "a-long-password")])
    ...
    server.stop()

`python studio.py demo RUN` (ui/cli.py) and the chat tab's 发布演示 Publish demo panel
(demo_panel.py) both start one. The page shows the persona's name and system prompt (read-only), the
sampling it answers with, example prompts from the run's probe set, and streaming answers: the tuned
model's with a switch to the base model's (`panes="toggle"`), or both side by side ("side-by-side").

A visitor reaches the chat and nothing else. No file inputs, no paths, no run picker: the adapter,
system prompt and sampling are the owner's, fixed when the demo starts. The one API endpoint is
`/chat` (its only parameter the message; the conversation is kept per session on the server, so no
client sends a history or a file), every other event is private and harmless, and `ChatOnly` turns
away Gradio's upload and file routes. One answer is decoded at a time (concurrency 1 over every chat
event, a bounded queue; the engine has its lock too). A failure that is not the visitor's own is one
line on the page, its detail only in the owner's console. Exposure follows the studio's rule
(ui/cli.check_exposure) and logins the studio's limiter (server.serve).

Each demo loads its own ChatEngine, a second copy of the base model: the studio's chat and a public
demo never wait for each other, at the cost of one more base model in memory per demo.
"""

from __future__ import annotations

import contextvars
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..chat import ChatEngine, resolve_adapter_dir, run_config_file, run_config_for
from ..errors import ConfigError, ModelError
from ..i18n import msg
from ..probes import best_adapter
from ..runs import adapter_dirs
from ..sampling import SamplingConfig
from ..workspace import Workspace
from .access import LoginLimiter
from .cli import DEMO_PANES, DEMO_QUEUE, page_language
from .i18n import Labels, language_of, say
from .server import serve

log = logging.getLogger("lora_studio.demo")

PANES, DEFAULT_QUEUE = DEMO_PANES, DEMO_QUEUE
MAX_MESSAGE_CHARS = 2000
MAX_TURNS = 8  # earlier exchanges the model is shown; the page keeps showing them all
# Gradio's routes that take uploads or serve files and folders: a chat needs none of them
CLOSED_ROUTES = ("/upload", "/process_recording", "/component_server", "/file=", "/file/", "/proxy=",
                 "/run-history", "/stream/", "/monitoring", "/vibe-")
# "现在你要扮演皇帝身边的女人--甄嬛" -> 甄嬛, "You are Ada, a ..." -> Ada: a persona's name in its system prompt
NAME_PATTERNS = (re.compile(r"扮演.*?(?:--|——|—|：|:)\s*([^\s，。,.!！?？、：:]{1,16})\s*[。.!！]?$"),
                 re.compile(r"^\s*(?:你是|你叫|You are|you are)\s*([^\s，。,.!！?？、：:]{1,16})"))
CSS = """
.toast-body .toast-title { display: none; }
#demo-name p { font-size: 1.6em; font-weight: 700; margin: 0; }
"""


@dataclass(frozen=True)
class DemoSpec:
    """Everything a demo page is built from; fixed while it runs."""
    run: str                      # the run's name (what the page and the studio call it)
    adapter: Path                 # the adapter folder it answers with
    name: str                     # the persona's name
    system_prompt: str
    sampling: SamplingConfig
    examples: tuple[str, ...]     # the run's probe prompts
    panes: str = "toggle"
    lang: str | None = None       # forced page language, None to follow each browser
    queue_size: int = DEFAULT_QUEUE

    @property
    def checkpoint(self) -> str:
        return self.adapter.name  # adapter, or checkpoint-N


def persona_name(system_prompt: str, run: str) -> str:
    """The name a system prompt gives its persona, else the run's name."""
    for pattern in NAME_PATTERNS:
        found = pattern.search(system_prompt or "")
        if found:
            return found.group(1)
    return run


def run_adapter(run_dir: Path, checkpoint: str | None = None) -> Path:
    """A run's adapter for a demo: the one named (adapter, checkpoint-N), else the best marked, else the final."""
    run_dir = Path(run_dir)
    if checkpoint:
        found = {folder.name: folder for folder in adapter_dirs(run_dir)}
        if checkpoint not in found:
            raise ModelError(msg("demo.no_checkpoint", name=checkpoint, choices=", ".join(found) or "-"),
                             str(run_dir), msg("demo.no_checkpoint_fix"))
        return found[checkpoint]
    return best_adapter(run_dir) or resolve_adapter_dir(run_dir)


def demo_spec(adapter: Path, system_prompt: str | None = None, sampling: SamplingConfig | None = None,
              panes: str = "toggle", lang: str | None = None, queue_size: int = DEFAULT_QUEUE) -> DemoSpec:
    """The demo of an adapter folder, with its run's system prompt (unless given) and probe prompts."""
    if panes not in PANES:
        raise ConfigError(msg("demo.bad_panes", value=panes, choices=", ".join(PANES)), "--panes")
    adapter = Path(adapter)
    config = run_config_for(adapter)
    run = run_config_file(adapter).parent.name
    system = config.system_prompt if system_prompt is None else system_prompt
    examples = tuple(dict.fromkeys(p.strip() for p in config.probe_prompts if p.strip()))
    return DemoSpec(run=run, adapter=adapter, name=persona_name(system, run), system_prompt=system,
                    sampling=sampling or SamplingConfig(), examples=examples, panes=panes, lang=lang,
                    queue_size=max(1, int(queue_size)))


def build_demo(spec: DemoSpec, engine: ChatEngine) -> gr.Blocks:
    """The demo's page over a loaded engine; `blocks.studio_i18n` is its gr.I18n, for launch."""
    labels = Labels(spec.lang)
    side_by_side = spec.panes == "side-by-side"
    ui = SimpleNamespace(examples=[])
    with gr.Blocks(title=spec.name) as blocks:
        gr.Markdown(spec.name, elem_id="demo-name")
        gr.Markdown(labels("demo.intro"))
        with gr.Accordion(labels("demo.persona"), open=False):
            gr.Textbox(spec.system_prompt, label=labels("demo.system_prompt"), interactive=False, lines=2)
            ui.sampling = gr.Markdown(elem_id="demo-sampling")
        ui.show_base = gr.Checkbox(False, label=labels("demo.show_base"), visible=not side_by_side)
        with gr.Row():
            # no "share" button: it posts to a Hugging Face discussion
            panes = {"height": 420, "buttons": ["copy", "copy_all"]}
            ui.tuned = gr.Chatbot(label=labels("demo.tuned"), elem_id="demo-tuned", **panes)
            ui.base = gr.Chatbot(label=labels("demo.base"), visible=side_by_side, elem_id="demo-base", **panes)
        with gr.Row():
            ui.message = gr.Textbox(show_label=False, placeholder=labels("demo.placeholder"), scale=6,
                                    container=False, elem_id="demo-input")
            ui.send = gr.Button(labels("demo.send"), variant="primary", scale=1)
            ui.clear = gr.Button(labels("demo.clear"), scale=1)
        if spec.examples:
            gr.Markdown(labels("demo.examples"))
            with gr.Row():
                ui.examples = [gr.Button(prompt, size="sm") for prompt in spec.examples]
        # the conversations (plain role/content messages) live on the server, one pair per session
        ui.tuned_turns, ui.base_turns = gr.State([]), gr.State([])
        _wire(spec, engine, blocks, ui)
    blocks.queue(default_concurrency_limit=1, max_size=spec.queue_size)
    blocks.studio_i18n = labels.gradio
    return blocks


def _wire(spec: DemoSpec, engine: ChatEngine, blocks, ui: SimpleNamespace) -> None:
    private, free = {"api_visibility": "private"}, {"api_visibility": "private", "concurrency_limit": None}

    def on_message_submit(message, tuned_history, base_history, request: gr.Request):
        lang = language_of(request, spec.lang)
        question = checked_message(message, lang)
        tuned = [*tuned_history, {"role": "user", "content": question}]
        base = [*base_history, {"role": "user", "content": question}]
        try:
            for result in engine.compare(recent(tuned), spec.system_prompt, spec.sampling, base_messages=recent(base)):
                tuned_now = [*tuned, {"role": "assistant", "content": result.tuned}]
                base_now = [*base, {"role": "assistant", "content": result.base}]
                yield "", tuned_now, base_now, tuned_now, base_now
        except Exception:  # noqa: BLE001 - a visitor gets one line; the owner's console the reason
            log.exception("the demo of %s could not answer", spec.run)
            raise gr.Error(say("demo.failed", lang), print_exception=False) from None

    def on_clear_click():
        return "", [], [], [], []

    def on_show_base_change(show):
        return gr.update(visible=not show), gr.update(visible=bool(show))

    def on_page_load(request: gr.Request):
        lang = language_of(request, spec.lang)
        shown = [say("demo.setting", lang, label=say(f"field.{name}", lang), value=value)
                 for name, value in spec.sampling.to_dict().items()]
        return f"**{say('demo.sampling', lang)}** " + " · ".join(shown)

    chat = dict(fn=on_message_submit, inputs=[ui.message, ui.tuned_turns, ui.base_turns],
                outputs=[ui.message, ui.tuned, ui.base, ui.tuned_turns, ui.base_turns],
                concurrency_id="chat", concurrency_limit=1)
    ui.send.click(**chat, api_name="chat")
    ui.message.submit(**chat, **private)
    for button, prompt in zip(ui.examples, spec.examples):
        button.click(lambda p=prompt: p, None, ui.message, **free).success(**chat, **private)
    ui.clear.click(on_clear_click, None, chat["outputs"], **free)
    for pane in (ui.tuned, ui.base):  # a pane's own bin empties the conversation on the server too
        pane.clear(on_clear_click, None, chat["outputs"], **free)
    ui.show_base.change(on_show_base_change, ui.show_base, [ui.tuned, ui.base], **free)
    blocks.load(on_page_load, None, ui.sampling, **free)


def checked_message(message, lang: str) -> str:
    """The visitor's question, or a gr.Error in their language when it is empty or too long."""
    question = str(message or "").strip()
    if not question:
        raise gr.Error(say("demo.message_empty", lang), print_exception=False)
    if len(question) > MAX_MESSAGE_CHARS:
        raise gr.Error(say("demo.message_too_long", lang, length=len(question), limit=MAX_MESSAGE_CHARS),
                       print_exception=False)
    return question


def recent(turns: list) -> list[dict]:
    """The last MAX_TURNS exchanges, ending with the new question (what the model is shown)."""
    return list(turns[-(2 * MAX_TURNS - 1):])


class ChatOnly:
    """ASGI middleware: Gradio's routes that take uploads or read files answer 404 on a demo."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and any(route in scope["path"] for route in CLOSED_ROUTES):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"detail": "Not Found"}'})
            return
        await self.app(scope, receive, send)


class DemoServer:
    """One published demo: its own engine (a second copy of the base model), its page and its server."""

    def __init__(self, spec: DemoSpec, workspace: Workspace, trust_remote_code: bool = False):
        self.spec, self.workspace, self.trust_remote_code = spec, workspace, trust_remote_code
        self.engine = ChatEngine(workspace)
        self.logins = LoginLimiter()  # its own count of failed logins: a demo is its own site
        self.blocks = None
        self.local_url: str | None = None
        self.share_url: str | None = None
        self.share = self.login = False

    @property
    def running(self) -> bool:
        return self.blocks is not None and self.blocks.is_running

    def start(self, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
              auth: list[tuple[str, str]] | None = None) -> "DemoServer":
        """Load the model, then serve the page; the caller has checked the exposure (ui/cli.check_exposure)."""
        from starlette.middleware import Middleware

        def build_and_serve():
            blocks = build_demo(self.spec, self.engine)
            urls = serve(blocks, self.logins, auth, middleware=[Middleware(ChatOnly)], server_name=host,
                         server_port=port, share=share, i18n=blocks.studio_i18n, theme=gr.themes.Soft(), css=CSS,
                         footer_links=["api"], show_error=False, run_history=False, enable_monitoring=False,
                         mcp_server=False, max_file_size=1)
            return blocks, urls

        self.engine.load_run(self.spec.adapter, trust_remote_code=self.trust_remote_code)
        try:
            # in a context of its own: from a studio handler, Gradio would take the new page's
            # components for ones that handler renders into the studio's page
            blocks, (self.local_url, self.share_url) = contextvars.Context().run(build_and_serve)
        except BaseException:
            self.engine = ChatEngine(self.workspace)  # the model copy goes with the failed start
            raise
        self.blocks, self.share, self.login = blocks, share, bool(auth)
        return self

    def stop(self) -> None:
        """Close the server (and its share tunnel) and let the model copy go."""
        blocks, self.blocks = self.blocks, None
        if blocks is not None:
            port = blocks.server_port
            blocks.close(verbose=False)
            from gradio import tunneling

            for tunnel in list(getattr(tunneling, "CURRENT_TUNNELS", ())):
                if getattr(tunnel, "local_port", None) == port:
                    tunnel.kill()
        self.engine = ChatEngine(self.workspace)

    def link_lines(self, lang: str) -> list[str]:
        """What the console (and the studio's panel) says about where the demo is."""
        lines = [say("demo.running_at", lang, name=self.spec.name, url=self.local_url)]
        if self.share:
            lines.append(say("demo.share_link", lang, url=self.share_url) if self.share_url else
                         say("demo.share_none", lang, url=self.local_url))
        return lines


def run_demo(args, auth) -> int:
    """`python studio.py demo RUN ...` once ui/cli.py has checked the exposure: serve until Ctrl-C."""
    from ..cli_commands import sampling_from_args
    from ..runs import find_run

    sampling = sampling_from_args(args)  # a bad flag is said before anything loads
    adapter = run_adapter(find_run(args.run, args.workspace), args.checkpoint)
    spec = demo_spec(adapter, system_prompt=args.system, sampling=sampling, panes=args.panes,
                     lang=page_language(args), queue_size=args.max_queue)
    print(say("demo.loading", args.lang, run=spec.run, checkpoint=spec.checkpoint), flush=True)
    server = DemoServer(spec, args.workspace, trust_remote_code=args.trust_remote_code)
    server.start(host=args.host, port=args.port, share=args.share, auth=auth)
    print("\n".join(server.link_lines(args.lang)), flush=True)
    server.blocks.block_thread()
    return 0
