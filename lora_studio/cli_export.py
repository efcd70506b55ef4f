"""CLI command `export RUN --to merged|gguf|ollama|space [--quant Q] [--adapter CHECKPOINT] ...`.

`register(subparsers, lang)` adds it. The command runs an `export.ExportJob` and follows it the way
`train` follows training: a line per stage and per log event on stdout, the progress within a stage as
a bar on stderr, Ctrl-C stops it (nothing half-written is left). It ends with the proof table, the
export's folder and, for Ollama, the `ollama create` command to run. Every line is a catalogue text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import help_text as _help
from .i18n import text


def register(sub, lang: str) -> None:
    from .cli_commands import add_trust_remote_code_flag
    from .export import TARGETS, known_quants

    quants = known_quants()
    export = sub.add_parser("export", help=_help("export.help_export", lang),
                            description=_help("export.help_export", lang))
    export.add_argument("run", metavar="RUN", help=_help("export.help_run", lang))
    export.add_argument("--to", dest="target", required=True, metavar="{" + ",".join(TARGETS) + "}",
                        help=_help("export.help_to", lang, targets=", ".join(TARGETS)))
    export.add_argument("--quant", default="f16", metavar="QUANT",
                        help=_help("export.help_quant", lang, known=", ".join(quants)) if quants
                        else _help("export.help_quant_none", lang))
    export.add_argument("--adapter", metavar="CHECKPOINT", help=_help("export.help_adapter", lang))
    export.add_argument("--llama-cpp", metavar="DIR", help=_help("export.help_llama_cpp", lang))
    export.add_argument("--out", metavar="DIR", help=_help("export.help_out", lang))
    export.add_argument("--hub-id", default="", metavar="ID", help=_help("export.help_hub_id", lang))
    add_trust_remote_code_flag(export, lang)
    export.set_defaults(func=export_command)

    fetch = sub.add_parser("fetch-llama-cpp", help=_help("export.help_fetch", lang),
                           description=_help("export.help_fetch", lang))
    fetch.add_argument("--sdist", metavar="FILE", help=_help("export.help_fetch_sdist", lang))
    fetch.set_defaults(func=fetch_command)


def fetch_command(args: argparse.Namespace) -> int:
    """Fetch llama.cpp's converters (pinned) into the workspace once; later exports find them there."""
    from . import llama_cpp

    def log(line) -> None:
        print(line.render(args.lang) if hasattr(line, "render") else str(line), flush=True)

    llama_cpp.fetch(args.workspace, log, sdist=Path(args.sdist) if args.sdist else None)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .export import ExportJob, ExportRequest

    def path(value):
        return Path(value).expanduser() if value else None

    request = ExportRequest(run=Path(args.run), target=args.target, quant=args.quant, adapter=path(args.adapter),
                            llama_cpp=path(args.llama_cpp), hub_id=args.hub_id, out=path(args.out))
    job = ExportJob(request, args.workspace, trust_remote_code=args.trust_remote_code)
    return follow_export(job, args.lang)


def follow_export(job, lang: str) -> int:
    """Start an export job and print its progress until it ends; Ctrl-C stops it."""
    from tqdm import tqdm

    from .errors import StudioError
    from .events import ExportProgress, Failed, Finished, Log
    from .export import STAGES

    job.start()
    seen, end, stage, bar = 0, None, None, None
    while end is None:
        try:
            job.join(timeout=0.2)
        except KeyboardInterrupt:
            print(text("export.cli_stopping", lang), flush=True)
            job.stop()
        for event in job.events.since(seen):
            seen += 1
            if isinstance(event, ExportProgress) and event.stage != stage:
                bar = _close(bar)
                stage = event.stage
                if stage in STAGES:
                    print(text("export.cli_stage", lang, number=STAGES.index(stage) + 1, total=len(STAGES),
                               stage=text(stage, lang)), flush=True)
                else:
                    bar = tqdm(total=event.total or None, desc=text(stage, lang), leave=False, dynamic_ncols=True)
            if isinstance(event, ExportProgress) and bar is not None:
                bar.total = event.total or bar.total
                bar.n = event.done
                bar.refresh()
            elif isinstance(event, Log):
                tqdm.write(event.text.render(lang), file=sys.stdout)
            elif isinstance(event, (Finished, Failed)):
                end = event
    _close(bar)
    if isinstance(end, Failed):
        if isinstance(job.error, StudioError):
            raise job.error  # cli.main prints it in the user's language and exits 2
        print(text("errors.internal_cli", lang, **end.text.params), file=sys.stderr)
        return 1
    if end.status != "completed":
        print(end.text.render(lang))
        return 1
    print(_report(job, lang))
    return 0


def _report(job, lang: str) -> str:
    from .export_verify import verify_text

    lines = ["", verify_text(job.verify, lang), "", text("export.cli_export_path", lang, path=str(job.out))]
    if job.request.target == "ollama":
        from .export_ollama import create_command

        lines.append(text("export.cli_ollama", lang, folder=str(job.out), command=create_command(job.out)))
    return "\n".join(lines)


def _close(bar):
    if bar is not None:
        bar.close()
    return None
