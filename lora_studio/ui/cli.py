"""The `studio` command: `python studio.py [--host H] [--port P] [--share] [--auth USER:PASS] ...`.

Parsing and the share/auth policy live here; building and launching the app is app.py's job.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..errors import ConfigError

AUTH_ENV = "LORA_STUDIO_AUTH"


def register(sub) -> None:
    studio = sub.add_parser("studio", help="start the web studio (the default command)")
    studio.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    studio.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    studio.add_argument("--share", action="store_true", help="also make a public Gradio link (needs --auth)")
    studio.add_argument("--share-without-auth", action="store_true",
                        help="allow --share without a login (anyone with the link can train and chat)")
    studio.add_argument("--auth", metavar="USER:PASS", help=f"require this login (or set {AUTH_ENV})")
    studio.add_argument("--lang", choices=["zh", "en"], help="force the page language (default: the browser's)")
    studio.add_argument("--workspace", metavar="DIR", help="where models and runs live (default ./workspace "
                        "or $LORA_STUDIO_HOME)")
    studio.set_defaults(func=run)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must be USER:PASS, both non-empty", "--auth / " + AUTH_ENV,
                          "For example: --auth huanhuan:a-long-password")
    return user, password


def check_share(share: bool, auth, share_without_auth: bool) -> None:
    if share and auth is None and not share_without_auth:
        raise ConfigError(
            "--share publishes the studio on the internet, and without a login anyone with the link can "
            "use this machine to train, read your data and chat", "--share",
            f"Add --auth USER:PASS (or set {AUTH_ENV}), or pass --share-without-auth if you really mean it.")


def run(args) -> int:
    started = time.perf_counter()
    if args.workspace:
        os.environ["LORA_STUDIO_HOME"] = str(Path(args.workspace).expanduser().resolve())
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    check_share(args.share, auth, args.share_without_auth)
    from .app import build_app, launch
    from .state import Studio

    studio = Studio(lang=args.lang)
    demo = build_app(studio)
    print(f"LoRA Studio: workspace {studio.workspace} (built in {time.perf_counter() - started:.1f} s)",
          flush=True)
    warm_up_demo_model()
    launch(demo, studio, host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


def warm_up_demo_model() -> None:
    """On a first start, build the demo model in the background while the page opens."""
    from ..demo_model import demo_model_path, ensure_demo_model, is_complete
    from ..errors import StudioError

    if is_complete(demo_model_path()):
        return

    def build() -> None:
        print("Building the built-in demo model (first start only, about 20 s)...", flush=True)
        try:
            print(f"Demo model ready: {ensure_demo_model()}", flush=True)
        except StudioError as exc:
            print(f"The demo model could not be built: {exc}", flush=True)

    threading.Thread(target=build, name="demo-model-warm-up", daemon=True).start()
