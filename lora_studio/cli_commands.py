"""CLI commands `train`, `chat`, `data check`, `demo-model` and `runs`.

`register(subparsers, lang)` adds them to the main parser. Each handler gets `args.workspace` (a
Workspace) and `args.lang`, prints only catalogue texts and lets a StudioError rise to `cli.main`.
The chat command's sampling flags are made from SamplingConfig's fields, so a new sampling setting is
a new flag with its help and default, and nothing here changes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import help_text as _help
from .config import RunConfig, Setting, fields_by_name
from .errors import ConfigError
from .i18n import msg, text
from .resume import RESUMABLE_SETTINGS, overrides_from_config, saved_config
from .sampling import SamplingConfig, sampling_from_dict
from .settings import default_of, fields_of

INTERNAL_ERROR = "errors.internal"  # the key errors.describe gives a bug


def say(key: str, lang: str, **params) -> None:
    print(text(key, lang, **params))


def register(sub, lang: str) -> None:
    train = sub.add_parser("train", help=_help("cli.help_train", lang), description=_help("cli.help_train", lang))
    train.add_argument("config", metavar="PRESET_OR_YAML", nargs="?",
                       help=_help("cli.help_train_config_optional", lang))
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_help("cli.help_set", lang))
    train.add_argument("--dry-run", action="store_true", help=_help("cli.help_dry_run", lang))
    train.add_argument("--resume", metavar="RUN", help=_help("cli.help_resume_run", lang,
                                                             allowed=", ".join(RESUMABLE_SETTINGS)))
    train.add_argument("--run-dir", metavar="DIR", help=_help("launch.help_run_dir", lang))
    add_trust_remote_code_flag(train, lang)
    train.set_defaults(func=train_command)

    chat = sub.add_parser("chat", help=_help("cli.help_chat", lang), description=_help("cli.help_chat", lang))
    chat.add_argument("--adapter", required=True, metavar="RUN_DIR", help=_help("cli.help_adapter", lang))
    chat.add_argument("--model", help=_help("cli.help_chat_model", lang))
    chat.add_argument("--prompt", help=_help("cli.help_prompt", lang))
    chat.add_argument("--system", help=_help("cli.help_chat_system", lang))
    add_trust_remote_code_flag(chat, lang)
    add_sampling_flags(chat, lang)
    chat.set_defaults(func=chat_command)

    data = sub.add_parser("data", help=_help("cli.help_data", lang))
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = data_sub.add_parser("check", help=_help("cli.help_data_check", lang))
    check.add_argument("file", metavar="FILE")
    check.add_argument("--model", help=_help("cli.help_check_model", lang))
    data_format = fields_by_name()[Setting.data_format]
    check.add_argument("--cutoff", type=int, help=_help(f"help.{Setting.cutoff_len}", lang))
    check.add_argument("--format", default=default_of(data_format), choices=data_format.metadata["choices"],
                       help=_help(f"help.{Setting.data_format}", lang))
    check.add_argument("--system", default="", help=_help(f"help.{Setting.system_prompt}", lang))
    add_trust_remote_code_flag(check, lang)
    check.set_defaults(func=data_check_command)

    demo = sub.add_parser("demo-model", help=_help("cli.help_demo_model", lang))
    demo.add_argument("--force", action="store_true", help=_help("cli.help_force", lang))
    demo.set_defaults(func=demo_model_command)

    runs = sub.add_parser("runs", help=_help("cli.help_runs", lang))
    runs.set_defaults(func=runs_command)


def add_trust_remote_code_flag(parser: argparse.ArgumentParser, lang: str) -> None:
    """The user's consent to run code a model ships: given per command, never stored in a run or preset."""
    parser.add_argument("--trust-remote-code", action="store_true", help=_help("cli.help_trust_remote_code", lang))


def add_sampling_flags(parser: argparse.ArgumentParser, lang: str) -> None:
    """One flag per SamplingConfig field: --max-new-tokens from max_new_tokens, its help and default."""
    group = parser.add_argument_group(text("cli.sampling_group", lang))
    for name, spec in fields_of(SamplingConfig).items():
        default = default_of(spec)
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=type(default), default=default,
                           help=_help("cli.help_with_default", lang, help=text(f"help.{name}", lang),
                                      default=default))


def sampling_from_args(args: argparse.Namespace) -> SamplingConfig:
    return sampling_from_dict({name: getattr(args, name) for name in fields_of(SamplingConfig)}, where="chat")


# --- train ---------------------------------------------------------------------------------------
def train_command(args: argparse.Namespace) -> int:
    from .config import apply_overrides
    from .presets import load_preset
    from .training import TrainingJob

    if args.resume:
        job = _resume_job(args)
        return _dry_run(job.config, args) if args.dry_run else follow(job, args.lang)
    if args.config is None:
        raise ConfigError(msg("cli.train_needs_config"), "train", msg("cli.train_needs_config_fix"))
    config = apply_overrides(load_preset(args.config, args.workspace), args.set)
    if args.dry_run:
        return _dry_run(config, args)
    run_dir = _given_run_dir(args.run_dir) if args.run_dir else None
    return follow(TrainingJob(config, args.workspace, run_dir=run_dir, trust_remote_code=args.trust_remote_code),
                  args.lang)


def _given_run_dir(name: str) -> Path:
    """`train --run-dir DIR`: the folder every rank of a launched run trains into, never one trained already."""
    from .errors import JobError
    from .runs import adapter_dirs

    run_dir = Path(name).expanduser().resolve()
    if adapter_dirs(run_dir):
        raise JobError(msg("launch.run_dir_has_run"), str(run_dir), msg("launch.run_dir_has_run_fix"))
    return run_dir


def _resume_job(args: argparse.Namespace):
    """`train --resume RUN [CONFIG] [--set K=V]`: the run's own settings, changed only where a resume may
    change them (resume.RESUMABLE_SETTINGS; the job logs each change, anything else is refused by name)."""
    from .config import apply_overrides
    from .presets import load_preset
    from .runs import find_run
    from .training import TrainingJob

    run_dir = find_run(args.resume, args.workspace)
    saved = saved_config(run_dir)
    given = load_preset(args.config, args.workspace) if args.config else saved
    overrides = overrides_from_config(saved, apply_overrides(given, args.set))
    return TrainingJob.resume(run_dir, args.workspace, trust_remote_code=args.trust_remote_code,
                              overrides=overrides)


def _dry_run(config: RunConfig, args: argparse.Namespace) -> int:
    from .estimate import dry_run

    print(dry_run(config, args.workspace).to_text(args.lang))
    from .launch import dry_run_lines

    for line in dry_run_lines(config, args.workspace, args.lang):  # under a launcher: its command(s)
        print(line)
    return 0


def follow(job, lang: str) -> int:
    """Start a training job and show its progress with tqdm until it ends; Ctrl-C stops it gracefully."""
    from tqdm import tqdm

    from .events import Failed, Finished, Log, Progress
    from .i18n import render
    from .runtime import World

    began = time.time()
    job.start()
    world = World.from_env()
    show = world.is_main  # under torchrun rank 0 speaks for all
    if show:
        say("cli.run_directory", lang, path=str(job.run_dir))
    bar = tqdm(total=None, unit=text("cli.bar_step", lang), disable=not show, dynamic_ncols=True)
    loss_label, speed_label = text("cli.bar_loss", lang), text("cli.bar_speed", lang)
    seen, end, clock = 0, None, False
    while end is None:
        try:
            job.join(timeout=0.2)
        except KeyboardInterrupt:
            bar.write(text("cli.stopping", lang))
            job.stop()
        for event in job.events.since(seen):
            seen += 1
            if isinstance(event, Progress):
                # this session's first step starts the clock, not the model loading before it (a resume
                # shows the step it continues from, an event of the session before, at once)
                if not clock and event.time >= began:
                    clock = True
                    bar.reset(total=event.total_steps)
                    bar.update(event.step - 1)  # a resumed run starts at its checkpoint's step
                    bar.last_print_n = bar.n
                bar.total = event.total_steps  # a resume may have changed max_steps
                bar.n = event.step
                bar.set_postfix({k: v for k, v in ((loss_label, event.loss),
                                 (speed_label, event.tokens_per_second)) if v is not None}, refresh=False)
                bar.refresh()
            elif isinstance(event, Log) and show:
                bar.write(event.text.render(lang))
            elif isinstance(event, (Finished, Failed)):
                end = event
    bar.close()
    if world.distributed:
        print(text("cli.rank_line", lang, rank=world.rank, text=render(job.summary(), lang)), flush=True)
    if isinstance(end, Failed):
        if end.text.key == INTERNAL_ERROR:  # a bug: the command line's own wording of it
            print(text("errors.internal_cli", lang, **end.text.params), file=sys.stderr)
        else:
            print(text("errors.prefix", lang) + end.text.render(lang), file=sys.stderr)
        return 1
    if show:
        status = text(f"status.{end.status}", lang)
        if end.loss is not None:
            say("cli.run_ended_loss", lang, status=status, step=end.step, loss=end.loss)
        else:
            say("cli.run_ended", lang, status=status, step=end.step)
        say("cli.adapter", lang, path=end.output)
        say("cli.run_directory", lang, path=str(job.run_dir))
    return 0


# --- chat ----------------------------------------------------------------------------------------
def chat_command(args: argparse.Namespace) -> int:
    from .chat import ZHEN_HUAN_SYSTEM_PROMPT, ChatEngine, resolve_adapter_dir, run_config_for
    from .cli_report import print_side_by_side

    sampling = sampling_from_args(args)  # a bad flag is reported before anything loads
    adapter = resolve_adapter_dir(Path(args.adapter))
    if args.model:
        config = RunConfig(model_name_or_path=args.model)
    else:
        config = run_config_for(adapter)
    system = args.system if args.system is not None else (config.system_prompt or ZHEN_HUAN_SYSTEM_PROMPT)
    engine = ChatEngine(args.workspace)
    engine.load_base(config, trust_remote_code=args.trust_remote_code)
    engine.set_adapter(adapter)
    prompts = [args.prompt] if args.prompt is not None else _interactive_prompts(args.lang)
    base_talk: list[dict] = []
    tuned_talk: list[dict] = []  # interactively, each side continues its own conversation
    for prompt in prompts:
        turn = {"role": "user", "content": prompt}
        base, tuned = engine.answer(tuned_talk + [turn], system, sampling, base_messages=base_talk + [turn])
        print_side_by_side(prompt, base, tuned, args.lang)
        base_talk += [turn, {"role": "assistant", "content": base}]
        tuned_talk += [turn, {"role": "assistant", "content": tuned}]
    return 0


def _interactive_prompts(lang: str):
    say("cli.chat_intro", lang)
    while True:
        try:
            line = input(text("cli.chat_prompt", lang)).strip()
        except EOFError:
            return
        if not line:
            return
        yield line


# --- data, demo model, runs ----------------------------------------------------------------------
def data_check_command(args: argparse.Namespace) -> int:
    from .cli_report import data_report

    path = Path(args.file)
    count, report = data_report(path, args.format, args.workspace, args.model, args.cutoff, args.system,
                                trust_remote_code=args.trust_remote_code)
    say("cli.data_ok", args.lang, path=str(path), count=count)
    print(report.to_text(args.lang))
    return 0


def demo_model_command(args: argparse.Namespace) -> int:
    from .demo_model import build_demo_model, demo_model_path

    path = build_demo_model(demo_model_path(args.workspace), force=args.force,
                            progress=lambda message: print(message.render(args.lang), flush=True))
    say("cli.demo_ready", args.lang, path=str(path))
    return 0


def runs_command(args: argparse.Namespace) -> int:
    from .cli_report import print_runs
    from .runs import list_runs

    print_runs(list_runs(args.workspace), args.lang)
    return 0
