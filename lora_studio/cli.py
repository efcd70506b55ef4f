"""Command line: `python studio.py COMMAND` (same as `python -m lora_studio COMMAND`).

With no command it starts the web studio. Every error a user can cause is printed as one clear
message and exits non-zero; tracebacks are kept for real bugs (set LORA_STUDIO_DEBUG=1 to see them).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import StudioError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio.py", description="LoRA Studio: fine-tune chat models "
                                     "with LoRA, from a web studio or the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a LoRA adapter from a YAML config")
    train.add_argument("config", help="a YAML file, e.g. presets/demo-tiny.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set learning_rate=2e-4 (repeatable)")
    train.add_argument("--dry-run", action="store_true", help="report parameters, steps and memory; "
                       "download nothing, train nothing")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    train.set_defaults(func=_train)

    chat = sub.add_parser("chat", help="compare base and tuned answers side by side")
    chat.add_argument("--adapter", required=True, metavar="RUN_DIR", help="a run folder or adapter folder")
    chat.add_argument("--model", help="base model (default: the one the run was trained on)")
    chat.add_argument("--prompt", help="ask once and exit (default: an interactive loop)")
    chat.add_argument("--system", help="system prompt (default: the run's, else Zhen Huan's)")
    chat.add_argument("--temperature", type=float, default=0.3, help="0 for greedy decoding")
    chat.add_argument("--top-p", type=float, default=0.8)
    chat.add_argument("--top-k", type=int, default=5)
    chat.add_argument("--repetition-penalty", type=float, default=1.1)
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--seed", type=int, default=42)
    chat.set_defaults(func=_chat)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help="validate a dataset file and print its statistics")
    check.add_argument("file")
    check.add_argument("--model", help="count tokens with this model's tokenizer and chat template")
    check.add_argument("--cutoff", type=int, help="cutoff_len to check lengths against")
    check.add_argument("--format", default="auto", choices=["auto", "alpaca", "messages"])
    check.add_argument("--system", default="", help="system prompt added when counting tokens")
    check.set_defaults(func=_data_check)

    demo = sub.add_parser("demo-model", help="build the tiny offline demo model into the workspace")
    demo.add_argument("--force", action="store_true", help="rebuild even if it exists")
    demo.set_defaults(func=_demo_model)

    runs = sub.add_parser("runs", help="list the runs in the workspace")
    runs.set_defaults(func=_runs)

    from . import cli_hub

    cli_hub.register(sub)
    _register_studio(sub)
    return parser


def _register_studio(sub) -> None:
    try:
        from .ui import cli as ui_cli
    except ImportError:
        return
    ui_cli.register(sub)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public API
    if "studio" in commands and (not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help"))):
        argv = ["studio", *argv]  # plain `python studio.py [--port ...]` opens the web studio
    args = parser.parse_args(argv)
    if not os.environ.get("LORA_STUDIO_DEBUG"):
        # deprecation notices between transformers, peft and torch are for their developers, not users
        warnings.filterwarnings("ignore", category=FutureWarning)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except StudioError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: say so plainly, keep the traceback for debugging
        if os.environ.get("LORA_STUDIO_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n(run with LORA_STUDIO_DEBUG=1 for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


# --- train ---------------------------------------------------------------------------------------
def _train(args) -> int:
    from .config import apply_overrides, load_yaml

    if args.resume:
        from .training import TrainingJob

        return _follow(TrainingJob.resume(Path(args.resume)))
    config = apply_overrides(load_yaml(args.config), args.set)
    if args.dry_run:
        from .cli_report import print_dry_run

        print_dry_run(config)
        return 0
    from .training import TrainingJob

    return _follow(TrainingJob(config))


def _follow(job) -> int:
    """Start a job and show its progress with tqdm until it ends; Ctrl-C stops it gracefully."""
    from tqdm import tqdm

    from .events import Failed, Finished, Log, Progress

    run_dir = job.start()
    show = job.is_main
    if show:
        print(f"Run directory: {run_dir}")
    bar = tqdm(total=None, unit="step", disable=not show, dynamic_ncols=True)
    seen, end = 0, None
    while end is None:
        try:
            job.join(timeout=0.2)
        except KeyboardInterrupt:
            bar.write("Stopping after the current step; the adapter will be saved...")
            job.stop()
        for event in job.events.since(seen):
            seen += 1
            if isinstance(event, Progress):
                if bar.total is None:  # the first step: start the clock now, not while the model loaded
                    bar.reset(total=event.total_steps)
                    bar.update(event.step - 1)  # a resumed run starts at its checkpoint's step
                    bar.last_print_n = bar.n
                bar.n = event.step
                bar.set_postfix({k: v for k, v in (("loss", event.loss),
                                 ("tok/s", event.tokens_per_second)) if v is not None}, refresh=False)
                bar.refresh()
            elif isinstance(event, Log) and show:  # under torchrun rank 0 speaks for all
                bar.write(event.message)
            elif isinstance(event, (Finished, Failed)):
                end = event
    bar.close()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(f"[rank {os.environ.get('RANK', '0')}] {job.summary()}", flush=True)
    if isinstance(end, Failed):
        print(f"error: {end.message}", file=sys.stderr)
        return 1
    if show:
        loss = f", final loss {end.loss:.4f}" if end.loss is not None else ""
        print(f"Run {end.status} at step {end.step}{loss}.\nAdapter: {end.output}\nRun directory: {run_dir}")
    return 0


# --- chat ----------------------------------------------------------------------------------------
def _chat(args) -> int:
    from .chat import ZHEN_HUAN_SYSTEM_PROMPT, ChatEngine, Sampling, resolve_adapter_dir, run_config_for
    from .cli_report import print_side_by_side

    adapter = resolve_adapter_dir(Path(args.adapter))
    config = run_config_for(adapter) if not args.model else None
    if config is None:
        from .config import RunConfig

        config = RunConfig(model_name_or_path=args.model)
    elif args.model:
        config = config.replace(model_name_or_path=args.model)
    system = args.system if args.system is not None else (config.system_prompt or ZHEN_HUAN_SYSTEM_PROMPT)
    engine = ChatEngine()
    engine.load_base(config)
    engine.set_adapter(adapter)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.top_k,
                        args.repetition_penalty, args.seed)
    prompts = [args.prompt] if args.prompt is not None else _interactive_prompts()
    base_talk: list[dict] = []
    tuned_talk: list[dict] = []  # interactively, each side continues its own conversation
    for prompt in prompts:
        turn = {"role": "user", "content": prompt}
        base, tuned = engine.answer(tuned_talk + [turn], system, sampling, base_messages=base_talk + [turn])
        print_side_by_side(prompt, base, tuned)
        base_talk += [turn, {"role": "assistant", "content": base}]
        tuned_talk += [turn, {"role": "assistant", "content": tuned}]
    return 0


def _interactive_prompts():
    print("Type a message (empty line or Ctrl-D to quit); both sides remember the conversation.")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return
        if not line:
            return
        yield line


# --- data, demo model, runs ----------------------------------------------------------------------
def _data_check(args) -> int:
    from .cli_report import print_data_report

    print_data_report(Path(args.file), args.format, args.model, args.cutoff, args.system)
    return 0


def _demo_model(args) -> int:
    from .demo_model import build_demo_model

    path = build_demo_model(force=args.force, progress=print)
    print(f"Demo model ready: {path}")
    return 0


def _runs(args) -> int:
    from .runs import list_runs

    runs = list_runs()
    if not runs:
        print("No runs yet. Start one with: python studio.py train presets/demo-tiny.yaml")
    for run in runs:
        loss = f"{run.loss:.4f}" if run.loss is not None else "-"
        print(f"{run.name:40s} {run.status:11s} step {run.step}/{run.total_steps}  loss {loss}  {run.model}")
    return 0
