"""The `studio` command: `python studio.py [--host H] [--port P] [--share] [--auth USER:PASS] ...`.

Parsing and the exposure policy live here; building and launching the app is app.py's job. The
CLI hands over `args.workspace` (a Workspace) and `args.lang` (the console's language); the page
follows each reader's browser unless --lang was given.

Exposure: the studio reads datasets, trains and chats for whoever reaches its page. On this machine
only (a loopback --host, no --share) no login is needed; a page others can reach (--share, or a
--host such as 0.0.0.0) needs --auth, unless --insecure-no-auth says it is meant (the older
--share-without-auth is the same flag). --auth may be given once per user; with logins, each
user's jobs are theirs to stop (access.py). --allow-path opens a folder beyond the workspace and the
bundled data/ and presets/ to the page; --max-upload-mb limits an upload.

The `demo` command (`python studio.py demo RUN [--share] [--auth USER:PASS] [--port N] ...`) serves a
chat-only page for one run (demo_app.py) under the same exposure rule, in its own words.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time

from ..errors import ConfigError
from ..i18n import language_from_env, msg, text
from .uploads import DEFAULT_LIMIT_MB, MB

AUTH_ENV = "LORA_STUDIO_AUTH"
LOOPBACK_NAMES = ("localhost",)
STUDIO_EXPOSURE = ("ui.share_needs_auth", "ui.host_needs_auth")  # what check_exposure says: --share, --host
DEMO_EXPOSURE = ("demo.share_needs_auth", "demo.host_needs_auth")
DEMO_PANES = ("toggle", "side-by-side")  # a demo's answer panes: one with a base/tuned switch, or both
DEMO_QUEUE = 16                          # questions a demo lets wait by default


def register(sub, lang: str | None = None) -> None:
    from ..cli import help_text

    lang = lang or language_from_env()
    studio = sub.add_parser("studio", help=help_text("ui.help_studio", lang))
    add_exposure_flags(studio, lang, 7860, "ui.help_port", "ui.help_insecure_no_auth")
    studio.add_argument("--allow-path", metavar="DIR", action="append", default=[],
                        help=help_text("ui.help_allow_path", lang))
    studio.add_argument("--max-upload-mb", type=float, default=DEFAULT_LIMIT_MB, metavar="MB",
                        help=help_text("ui.help_max_upload_mb", lang, default=DEFAULT_LIMIT_MB))
    studio.set_defaults(func=run)
    register_demo(sub, lang)


def add_exposure_flags(parser, lang: str, port: int | None, port_help: str, insecure_help: str) -> None:
    """--host, --port, --share, --insecure-no-auth and --auth: who can reach a page (check_exposure)."""
    from ..cli import help_text

    parser.add_argument("--host", default="127.0.0.1", help=help_text("ui.help_host", lang))
    parser.add_argument("--port", type=int, default=port, help=help_text(port_help, lang))
    parser.add_argument("--share", action="store_true", help=help_text("ui.help_share", lang))
    parser.add_argument("--insecure-no-auth", "--share-without-auth", dest="insecure_no_auth", action="store_true",
                        help=help_text(insecure_help, lang))
    parser.add_argument("--auth", metavar="USER:PASS", action="append",
                        help=help_text("ui.help_auth", lang, variable=AUTH_ENV))


def register_demo(sub, lang: str) -> None:
    from ..cli import help_text
    from ..cli_commands import add_sampling_flags, add_trust_remote_code_flag

    demo = sub.add_parser("demo", help=help_text("demo.help_demo", lang), description=help_text("demo.help_demo", lang))
    demo.add_argument("run", metavar="RUN", help=help_text("demo.help_run", lang))
    demo.add_argument("--checkpoint", metavar="NAME", help=help_text("demo.help_checkpoint", lang))
    demo.add_argument("--panes", choices=DEMO_PANES, default=DEMO_PANES[0],
                      help=help_text("demo.help_panes", lang))
    demo.add_argument("--system", help=help_text("demo.help_system", lang))
    demo.add_argument("--max-queue", type=int, default=DEMO_QUEUE, metavar="N",
                      help=help_text("demo.help_max_queue", lang, default=DEMO_QUEUE))
    add_exposure_flags(demo, lang, None, "demo.help_port", "demo.help_insecure_no_auth")
    add_trust_remote_code_flag(demo, lang)
    add_sampling_flags(demo, lang)
    demo.set_defaults(func=run_demo)


def parse_auth(values) -> list[tuple[str, str]] | None:
    """The logins of --auth (each USER:PASS; the flag once per user) or of $LORA_STUDIO_AUTH (one)."""
    if isinstance(values, str):
        values = [values]
    logins = []
    for value in values or []:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError(msg("ui.auth_format"), f"--auth / {AUTH_ENV}", msg("ui.auth_format_fix"))
        logins.append((user, password))
    return logins or None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server listening on `host`."""
    host = (host or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to an address others reach


def check_exposure(host: str, share: bool, auth, insecure_no_auth: bool, words: tuple = STUDIO_EXPOSURE) -> None:
    """Refuse a page others can reach (--share, a --host other than loopback) without a login.

    `words` are the keys of what is said for --share and for --host (the studio's, or a demo's).
    """
    if auth is not None or insecure_no_auth:
        return
    share_key, host_key = words
    if share:
        raise ConfigError(msg(share_key), "--share", msg("ui.needs_auth_fix", variable=AUTH_ENV))
    if not is_loopback(host):
        raise ConfigError(msg(host_key, host=host), "--host", msg("ui.needs_auth_fix", variable=AUTH_ENV))


def upload_limit(megabytes: float) -> int:
    if not megabytes > 0:
        raise ConfigError(msg("ui.upload_limit_invalid", value=megabytes), "--max-upload-mb",
                          msg("ui.upload_limit_invalid_fix", default=DEFAULT_LIMIT_MB))
    return int(megabytes * MB)


def page_language(args) -> str | None:
    """The language --lang forces on every page, None to follow each browser.

    `args.lang` is always set (from LANG when --lang was not given); the CLI says in `lang_given`
    whether the user asked for it.
    """
    return args.lang if getattr(args, "lang_given", False) else None


def run(args) -> int:
    started = time.perf_counter()
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    check_exposure(args.host, args.share, auth, args.insecure_no_auth)
    limit = upload_limit(args.max_upload_mb)
    from ..workspace import ensure_writable
    from .app import build_app, launch
    from .state import Studio

    ensure_writable(args.workspace)  # a read-only workspace, or one that is a file, is said at start
    studio = Studio(args.workspace, lang=page_language(args), allowed=tuple(args.allow_path), max_upload_bytes=limit)
    demo = build_app(studio)
    print(text("ui.built", args.lang, workspace=studio.workspace.root, seconds=time.perf_counter() - started),
          flush=True)
    warm_up_demo_model(studio.workspace, args.lang)
    launch(demo, studio, host=args.host, port=args.port, share=args.share, auth=auth, console=args.lang)
    return 0


def run_demo(args) -> int:
    """`python studio.py demo RUN`: the exposure is checked before anything heavy is imported."""
    auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    check_exposure(args.host, args.share, auth, args.insecure_no_auth, DEMO_EXPOSURE)
    from .demo_app import run_demo as serve_demo

    return serve_demo(args, auth)


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
