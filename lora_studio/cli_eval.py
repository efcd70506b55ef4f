"""CLI command `eval RUN`: the probe grid of a run's checkpoints and, with --metrics, held-out metrics.

    python studio.py eval RUN [--checkpoints all|best|N,M] [--probes FILE] [--metrics]

Runs an `evaluation.EvalJob` in this process and prints its log lines, then the grid (one row per
model, base first; one column per prompt, answers cut to fit the terminal; as many tables as the
width needs) and, with --metrics, the metrics table, the best and worst validation samples and the
control answers of the last model beside the base's. Ctrl-C stops the job: what was answered is kept
in the run folder and printed.
"""

from __future__ import annotations

import argparse
import shutil

from .cli import help_text as _help
from .cli_report import display_width, pad
from .i18n import text

NAME_WIDTH = 14
MIN_CELL = 12


def register(sub, lang: str) -> None:
    from .cli_commands import add_trust_remote_code_flag
    from .evaluation import DEFAULT_MAX_NEW_TOKENS

    command = sub.add_parser("eval", help=_help("evaluation.cli_help", lang),
                             description=_help("evaluation.cli_help", lang))
    command.add_argument("run", metavar="RUN", help=_help("evaluation.cli_help_run", lang))
    command.add_argument("--checkpoints", default="all", metavar="all|best|N,M",
                         help=_help("evaluation.cli_help_checkpoints", lang))
    command.add_argument("--probes", metavar="FILE", help=_help("evaluation.cli_help_probes", lang))
    command.add_argument("--metrics", action="store_true", help=_help("evaluation.cli_help_metrics", lang))
    command.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                         help=_help("evaluation.cli_help_max_new_tokens", lang, default=DEFAULT_MAX_NEW_TOKENS))
    add_trust_remote_code_flag(command, lang)
    command.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    from .evaluation import EvalJob, EvalRequest
    from .probes import load_probe_file
    from .runs import find_run

    run = find_run(args.run, args.workspace)
    prompts = tuple(load_probe_file(args.probes)) if args.probes else None
    job = EvalJob(EvalRequest(run, args.checkpoints, prompts, args.metrics, args.max_new_tokens), args.workspace,
                  trust_remote_code=args.trust_remote_code)
    interrupted = follow(job, args.lang)
    if job.state == "failed":
        return 1
    print_results(job, args.lang)
    return 130 if interrupted else 0


def follow(job, lang: str) -> bool:
    """Start the job and print its log until it ends; True when Ctrl-C stopped it."""
    import sys

    from .events import Failed, Log

    job.start()
    seen, interrupted = 0, False
    while True:
        try:
            ended = job.join(timeout=0.2)
        except KeyboardInterrupt:
            print(text("evaluation.cli_stopping", lang), flush=True)
            job.stop()
            interrupted, ended = True, False
        for event in job.events.since(seen):
            seen += 1
            if isinstance(event, Log):
                print(event.text.render(lang), flush=True)
            elif isinstance(event, Failed):
                print(text("errors.prefix", lang) + event.text.render(lang), file=sys.stderr)
        if ended:
            return interrupted


# --- what is printed ---------------------------------------------------------------------------
def cut(value: str, width: int) -> str:
    """One line of at most `width` columns: newlines become spaces, a cut ends with '…'."""
    value = " ".join(value.split())
    if display_width(value) <= width:
        return value
    out = ""
    for ch in value:
        if display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def table_lines(header: list[str], rows: list[list[str]], widths: list[int]) -> list[str]:
    lines = [" | ".join(pad(cut(h, w), w) for h, w in zip(header, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(pad(cut(c, w), w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def grid_lines(names: list[str], prompts: list[str], cells: dict, columns: int, lang: str) -> list[str]:
    """The probe grid as text tables: rows are models, columns prompts, split to fit `columns`."""
    per_table = max(1, (columns - NAME_WIDTH) // (MIN_CELL + 3))
    lines = []
    for start in range(0, len(prompts), per_table):
        chunk = prompts[start:start + per_table]
        width = max(MIN_CELL, (columns - NAME_WIDTH) // len(chunk) - 3)
        rows = [[name, *(cells[(name, p)].answer if (name, p) in cells else "…" for p in chunk)] for name in names]
        lines += table_lines([text("evaluation.col_model", lang), *chunk], rows, [NAME_WIDTH] + [width] * len(chunk))
        lines.append("")
    return lines


def metrics_lines(checkpoints: dict, lang: str) -> list[str]:
    from .evaluation import METRIC_KEYS, metric_text

    header = [text("evaluation.col_model", lang), *(text(f"evaluation.metric_{k}", lang) for k in METRIC_KEYS)]
    rows = [[name, *(metric_text(k, entry.get(k)) for k in METRIC_KEYS)] for name, entry in checkpoints.items()]
    widths = [max(display_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return table_lines(header, rows, widths)


def print_results(job, lang: str) -> None:
    from .probes import grid, read_answers

    columns = shutil.get_terminal_size((100, 20)).columns
    names, cells = grid(read_answers(job.run_dir), job.prompts)
    names = [name for name in names if name in {t.name for t in job.targets}]  # this evaluation's models only
    print("\n" + text("evaluation.cli_grid", lang, run=job.run_dir.name))
    print("\n".join(grid_lines(names, job.prompts, cells, columns, lang)))
    if not job.request.metrics or not job.metrics:
        print(text("evaluation.cli_saved", lang, path=str(job.run_dir)))
        return
    evaluated = {t.name for t in job.targets}
    shown = {name: entry for name, entry in job.metrics.items() if name in evaluated}
    print(text("evaluation.cli_metrics", lang))
    print("\n".join(metrics_lines(shown, lang)))
    last = list(shown)[-1]
    entry, base = shown[last], shown.get("base", {})
    half = max(MIN_CELL, (columns - 3) // 2)
    for kind in ("best", "worst"):
        if entry.get(kind):
            print("\n" + text(f"evaluation.cli_{kind}", lang, name=last))
            for sample in entry[kind]:
                print(text("evaluation.cli_sample", lang, score=sample["rouge_l"], prompt=cut(sample["prompt"], half),
                           answer=cut(sample["answer"], half), reference=cut(sample["reference"], half)))
    if entry.get("control") and last != "base":
        print("\n" + text("evaluation.cli_control", lang, name=last))
        answers = {c["prompt"]: c["answer"] for c in base.get("control", [])}
        for control in entry["control"]:
            print(text("evaluation.cli_control_line", lang, prompt=control["prompt"],
                       base=cut(answers.get(control["prompt"], ""), half), tuned=cut(control["answer"], half),
                       name=last))
    print("\n" + text("evaluation.cli_saved", lang, path=str(job.run_dir)))
