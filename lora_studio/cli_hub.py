"""CLI commands `download` (fetch a model from ModelScope or Hugging Face) and `models` (list the workspace's).

`register(subparsers, lang)` adds both to the main parser; each handler gets `args.workspace` and
`args.lang`, returns an exit code and lets a StudioError rise to `cli.main`, which prints it.
"""

from __future__ import annotations

import argparse
import sys

from .cli import help_text
from .config import Setting
from .events import DownloadProgress, Failed, Finished, Log
from .hub_sources import SOURCES
from .i18n import text

CANCELLED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"


def register(subparsers, lang: str) -> None:
    download = subparsers.add_parser("download", help=help_text("cli.help_download", lang),
                                     description=help_text("cli.help_download_long", lang))
    download.add_argument("model_id", metavar="MODEL_ID", help=help_text("cli.help_model_id", lang))
    download.add_argument("--source", choices=SOURCES, default=SOURCES[0], help=help_text("cli.help_source", lang))
    download.add_argument("--revision", default="", metavar="R", help=help_text("cli.help_revision", lang))
    download.set_defaults(func=download_command)

    models = subparsers.add_parser("models", help=help_text("cli.help_models", lang))
    models.set_defaults(func=models_command)


class DownloadBar:
    """The one tqdm bar of a download, started at what an earlier run left so speed and ETA are honest."""

    def __init__(self, lang: str):
        self.lang = lang
        self.bar = None

    def __call__(self, event) -> None:
        if isinstance(event, DownloadProgress):
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event.bytes_total, initial=event.bytes_done, unit="B", unit_scale=True,
                                unit_divisor=1000, desc=text("cli.downloading", self.lang), dynamic_ncols=True)
            self.bar.update(event.bytes_done - self.bar.n)
            if event.current_file:
                self.bar.set_postfix_str(event.current_file, refresh=False)
        elif isinstance(event, Log):
            line = event.text.render(self.lang)
            if event.level == "warning":
                line = text("cli.warning_prefix", self.lang) + line
            (self.bar.write if self.bar is not None else print)(line)
        elif isinstance(event, (Finished, Failed)):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def download_command(args: argparse.Namespace) -> int:
    from .hub import DownloadCancelledError, download

    bar = DownloadBar(args.lang)
    try:
        folder = download(args.model_id, args.workspace, source=args.source, revision=args.revision,
                          on_event=bar)
    except DownloadCancelledError as exc:
        bar.close()
        print("\n" + exc.render(args.lang), file=sys.stderr)
        return CANCELLED_EXIT
    finally:
        bar.close()
    print(text("cli.saved_to", args.lang, path=str(folder)))
    print(text("cli.use_it", args.lang, key=Setting.model_name_or_path, model=args.model_id))
    return 0


def models_command(args: argparse.Namespace) -> int:
    from .cli_report import display_width, pad
    from .hub_local import format_bytes, list_local_models

    lang, root = args.lang, args.workspace.models
    models = list_local_models(args.workspace)
    if not models:
        print(text("cli.no_models", lang, folder=str(root)))
        return 0
    width = max(display_width(m.name) for m in models)
    print(text("cli.models_in", lang, folder=str(root)))
    for model in models:
        status = (text("cli.model_ready", lang) if model.complete
                  else text("cli.model_incomplete", lang, missing=model.missing_text(lang)))
        print(text("cli.model_line", lang, name=pad(model.name, width), size=f"{format_bytes(model.size):>9}",
                   status=status))
    return 0
