"""CLI commands `download` (fetch a model from ModelScope or Hugging Face) and `models` (list the workspace's).

`register(subparsers)` adds both to the main parser; each handler returns an exit code and lets a
StudioError rise to the top-level handler, which prints it.
"""

from __future__ import annotations

import argparse
import sys

from .events import DownloadProgress, Failed, Finished, Log
from .hub_sources import SOURCES


def register(subparsers) -> None:
    download = subparsers.add_parser(
        "download", help="download a model into the workspace (resumes an interrupted download)",
        description="Download a model into the workspace's models/ folder. Run it again after an "
        "interruption and it continues where it stopped.")
    download.add_argument("model_id", metavar="MODEL_ID", help="hub id, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    download.add_argument("--source", choices=SOURCES, default="modelscope",
                          help="where to download from (default: modelscope)")
    download.add_argument("--revision", default="", metavar="R", help="branch, tag or commit (default: the "
                          "hub's default branch)")
    download.set_defaults(func=download_command)

    models = subparsers.add_parser("models", help="list the models in the workspace")
    models.set_defaults(func=models_command)


def download_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .hub import DownloadCancelledError, download

    bar: tqdm | None = None

    def on_event(event) -> None:
        nonlocal bar
        if isinstance(event, DownloadProgress):
            if bar is None:
                # Start at what an earlier run left, so a resumed download's speed and ETA are honest.
                bar = tqdm(total=event.bytes_total, initial=event.bytes_done, unit="B", unit_scale=True,
                           unit_divisor=1000, desc="Downloading", dynamic_ncols=True)
            bar.update(event.bytes_done - bar.n)
            if event.current_file:
                bar.set_postfix_str(event.current_file, refresh=False)
        elif isinstance(event, Log):
            (bar.write if bar is not None else print)(("Warning: " if event.level == "warning" else "")
                                                      + event.message)
        elif isinstance(event, (Finished, Failed)) and bar is not None:
            bar.close()
            bar = None

    try:
        folder = download(args.model_id, source=args.source, revision=args.revision, on_event=on_event)
    except DownloadCancelledError as exc:
        if bar is not None:
            bar.close()
        print(f"\n{exc}", file=sys.stderr)
        return 130  # the shell's code for "stopped by Ctrl-C"
    finally:
        if bar is not None:
            bar.close()
    print(f"Saved to {folder}")
    print(f"Use it with: --set model_name_or_path={args.model_id}")
    return 0


def models_command(args: argparse.Namespace) -> int:
    from .hub_local import format_bytes, list_local_models, models_dir

    models = list_local_models()
    if not models:
        print(f"No models in {models_dir()} yet. Get one with: python studio.py download "
              "Qwen/Qwen2.5-0.5B-Instruct  (or: python studio.py demo-model)")
        return 0
    width = max(len(m.name) for m in models)
    print(f"Models in {models_dir()}:")
    for model in models:
        status = "ready" if model.complete else "incomplete: missing " + "; ".join(model.missing)
        print(f"  {model.name:<{width}}  {format_bytes(model.size):>9}  {status}")
    return 0
