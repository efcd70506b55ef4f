"""Command line: `python studio.py COMMAND` (same as `python -m lora_studio COMMAND`).

With no command it starts the web studio. `main` builds the one Workspace (from `--workspace` or
$LORA_STUDIO_HOME) and the language (`--lang`, else LANG: zh_CN gives Chinese) and hands both to every
command as `args.workspace` and `args.lang`. Every line it prints comes from the message catalogue.
An error a user can cause is printed as one message and exits 2; a bug exits 1 with a short
internal-error line. LORA_STUDIO_DEBUG=1 prints the traceback of every error, ours included.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from .errors import StudioError, debugging, first_line
from .i18n import LANGUAGES, language_from_env, text
from .workspace import HOME_VARIABLE, Workspace, ensure_writable

COMMON_OPTIONS = ("--lang", "--workspace")  # taken before the command and after it alike
# commands that write into the workspace: a read-only one, or a file, is one message before they start
WRITING_COMMANDS = ("train", "demo-model", "download", "studio", "export", "eval", "fetch-llama-cpp")


def help_text(key: str, lang: str, **params) -> str:
    """A catalogue text for argparse, whose help strings are %-format templates."""
    return text(key, lang, **params).replace("%", "%%")


def add_common_options(parser: argparse.ArgumentParser, lang: str, default) -> None:
    parser.add_argument("--lang", choices=LANGUAGES, default=default, help=help_text("cli.help_lang", lang))
    parser.add_argument("--workspace", metavar="DIR", default=default,
                        help=help_text("cli.help_workspace", lang, variable=HOME_VARIABLE))


def localized_parser_class(lang: str) -> type[argparse.ArgumentParser]:
    """An ArgumentParser whose own words (usage, section titles, -h) are the catalogue's in `lang`.

    argparse translates them only through gettext, for which Python ships no Chinese.
    """
    class Formatter(argparse.HelpFormatter):
        def add_usage(self, usage, actions, groups, prefix=None):
            super().add_usage(usage, actions, groups, prefix=text("cli.usage", lang) if prefix is None else prefix)

    class LocalizedParser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{"formatter_class": Formatter, **kwargs, "add_help": False})
            self._positionals.title = text("cli.positionals", lang)
            self._optionals.title = text("cli.options", lang)
            self.add_argument("-h", "--help", action="help", help=help_text("cli.help_help", lang))

    return LocalizedParser


def command_parser_class(lang: str) -> type[argparse.ArgumentParser]:
    """The parser class of every subcommand: each one takes --lang and --workspace too.

    Their default is SUPPRESS so that a subcommand that does not get them leaves what the top level
    parsed; 'resolve' lets a subcommand that defines them itself (the studio's) keep its own.
    """
    class CommandParser(localized_parser_class(lang)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{"conflict_handler": "resolve", **kwargs})
            add_common_options(self, lang, argparse.SUPPRESS)

    return CommandParser


def build_parser(lang: str) -> argparse.ArgumentParser:
    parser = localized_parser_class(lang)(prog="studio.py", description=help_text("cli.description", lang))
    add_common_options(parser, lang, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=command_parser_class(lang))
    from . import cli_commands, cli_eval, cli_export, cli_hub

    cli_commands.register(sub, lang)
    cli_hub.register(sub, lang)
    cli_export.register(sub, lang)
    cli_eval.register(sub, lang)
    _register_studio(sub, lang)
    return parser


def _register_studio(sub, lang: str) -> None:
    """The web studio's command comes from the UI package, which is optional for the library."""
    try:
        from .ui import cli as ui_cli
    except ImportError:
        return
    ui_cli.register(sub, lang)


def requested_language(argv: list[str], environ=None) -> str:
    """--lang from the command line, before parsing it (the help texts need it), else from LANG."""
    for index, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--lang=") else (
            argv[index + 1] if arg == "--lang" and index + 1 < len(argv) else None)
        if value in LANGUAGES:
            return value
    return language_from_env(environ)


def _with_default_command(argv: list[str], commands) -> list[str]:
    """Plain `python studio.py [--workspace W] [--port ...]` opens the web studio."""
    index = 0
    while index < len(argv) and argv[index].split("=")[0] in COMMON_OPTIONS:
        index += 1 if "=" in argv[index] else 2
    rest = argv[index:]
    if "studio" in commands and (not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help"))):
        return [*argv[:index], "studio", *rest]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lang = requested_language(argv)
    parser = build_parser(lang)
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public API
    args = parser.parse_args(_with_default_command(argv, commands))
    lang = args.lang or language_from_env()
    # lang_given: the studio lets each browser choose its language unless --lang forced one
    args.lang_given, args.lang = args.lang is not None, lang
    args.workspace = Workspace.from_env(folder=args.workspace)
    if not debugging():
        # deprecation notices between transformers, peft and torch are for their developers, not users
        warnings.filterwarnings("ignore", category=FutureWarning)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command in WRITING_COMMANDS and not getattr(args, "dry_run", False):
            ensure_writable(args.workspace)
        return int(args.func(args) or 0)
    except StudioError as exc:
        if debugging():
            traceback.print_exc()
        print(text("errors.prefix", lang) + exc.render(lang), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n" + text("errors.interrupted", lang), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: say so plainly, the traceback is for debugging
        if debugging():
            traceback.print_exc()
        print(text("errors.internal_cli", lang, type=type(exc).__name__, first_line=first_line(exc)),
              file=sys.stderr)
        return 1
