"""The `studio` command: `python studio.py [--host H] [--port P] [--share] [--auth USER:PASS] ...`.

Parsing and the share/auth policy live here; building and launching the app is app.py's job. The
CLI hands over `args.workspace` (a Workspace) and `args.lang` (the console's language); the page
follows each reader's browser unless --lang was given.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import ConfigError
from ..i18n import language_from_env, msg, text

AUTH_ENV = "LORA_STUDIO_AUTH"


def register(sub, lang: str | None = None) -> None:
    from ..cli import help_text

    lang = lang or language_from_env()
    studio = sub.add_parser("studio", help=help_text("ui.help_studio", lang))
    studio.add_argument("--host", default="127.0.0.1", help=help_text("ui.help_host", lang))
    studio.add_argument("--port", type=int, default=7860, help=help_text("ui.help_port", lang))
    studio.add_argument("--share", action="store_true", help=help_text("ui.help_share", lang))
    studio.add_argument("--share-without-auth", action="store_true", help=help_text("ui.help_share_without_auth", lang))
    studio.add_argument("--auth", metavar="USER:PASS", help=help_text("ui.help_auth", lang, variable=AUTH_ENV))
    studio.set_defaults(func=run)


def parse_auth(text_value: str | None) -> tuple[str, str] | None:
    if not text_value:
        return None
    user, sep, password = text_value.partition(":")
    if not sep or not user or not password:
        raise ConfigError(msg("ui.auth_format"), f"--auth / {AUTH_ENV}", msg("ui.auth_format_fix"))
    return user, password


def check_share(share: bool, auth, share_without_auth: bool) -> None:
    if share and auth is None and not share_without_auth:
        raise ConfigError(msg("ui.share_needs_auth"), "--share", msg("ui.share_needs_auth_fix", variable=AUTH_ENV))


def page_language(args) -> str | None:
    """The language --lang forces on every page, None to follow each browser.

    `args.lang` is always set (from LANG when --lang was not given); the CLI says in `lang_given`
    whether the user asked for it.
    """
    return args.lang if getattr(args, "lang_given", False) else None


def run(args) -> int:
    started = time.perf_counter()
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    check_share(args.share, auth, args.share_without_auth)
    from .app import build_app, launch
    from .state import Studio

    studio = Studio(args.workspace, lang=page_language(args))
    demo = build_app(studio)
    print(text("ui.built", args.lang, workspace=studio.workspace.root, seconds=time.perf_counter() - started),
          flush=True)
    warm_up_demo_model(studio.workspace, args.lang)
    launch(demo, studio, host=args.host, port=args.port, share=args.share, auth=auth, console=args.lang)
    return 0


def warm_up_demo_model(workspace, lang: str) -> None:
    """On a first start, build the demo model in the background while the page opens."""
    from ..demo_model import demo_model_path, ensure_demo_model, is_complete
    from ..errors import StudioError

    if is_complete(demo_model_path(workspace)):
        return

    def build() -> None:
        print(text("ui.demo_building", lang), flush=True)
        try:
            print(text("ui.demo_ready", lang, path=ensure_demo_model(workspace)), flush=True)
        except StudioError as exc:
            print(text("ui.demo_failed", lang, error=exc.render(lang)), flush=True)

    threading.Thread(target=build, name="demo-model-warm-up", daemon=True).start()
