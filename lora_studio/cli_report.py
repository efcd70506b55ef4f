"""What the CLI prints beyond one-line messages: side-by-side answers, the runs table, dataset reports."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

from .config import RunConfig
from .i18n import text
from .workspace import Workspace

NARROW_COLUMNS = 60  # below this a terminal shows the two answers one after the other
RUN_NAME_WIDTH = 40


def display_width(value: str) -> int:
    """Columns a terminal gives `value`: two for each wide (Chinese) character."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in value)


def pad(value: str, width: int) -> str:
    return value + " " * max(0, width - display_width(value))


def _wrap(value: str, width: int) -> list[str]:
    """Wrap by display width, so Chinese (two columns a character) lines up."""
    lines = []
    for paragraph in value.splitlines() or [""]:
        line = ""
        for ch in paragraph:
            if display_width(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    return lines


def print_side_by_side(prompt: str, base: str, tuned: str, lang: str) -> None:
    columns = shutil.get_terminal_size((100, 20)).columns
    base_title, tuned_title = text("cli.base_answer", lang), text("cli.tuned_answer", lang)
    print("\n" + text("cli.chat_prompt", lang) + prompt)
    if columns < NARROW_COLUMNS:
        print(f"[{base_title}]\n{base}\n[{tuned_title}]\n{tuned}")
        return
    half = (columns - 3) // 2
    left, right = _wrap(base, half), _wrap(tuned, half)
    print(pad(base_title, half) + " | " + tuned_title)
    print("-" * half + "-+-" + "-" * half)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(pad(a, half) + " | " + b)


def print_runs(runs: list, lang: str) -> None:
    """One line a run, newest first: name, status, steps, last loss, base model."""
    if not runs:
        print(text("cli.no_runs", lang))
        return
    statuses = {run.status: text(f"status.{run.status}", lang) for run in runs}
    status_width = max(display_width(word) for word in statuses.values())
    for run in runs:
        loss = f"{run.loss:.4f}" if run.loss is not None else "-"
        print(text("cli.run_line", lang, name=pad(run.name, RUN_NAME_WIDTH),
                   status=pad(statuses[run.status], status_width), step=run.step, total=run.total_steps,
                   loss=loss, model=run.model).rstrip())


def data_report(path: Path, data_format: str, workspace: Workspace, model: str | None = None,
                cutoff: int | None = None, system: str = "", trust_remote_code: bool = False):
    """(number of records, DatasetReport) for `data check`; tokens are counted when a model is named.

    `trust_remote_code` is the user's consent (--trust-remote-code) to run a custom tokenizer's code.
    """
    from .data import dataset_report, load_records

    records = load_records(path, data_format)
    token_length, cutoff_len = None, cutoff
    if model:
        from .models import renderer_for

        config = RunConfig(model_name_or_path=model)
        renderer = renderer_for(config, workspace, system, trust_remote_code=trust_remote_code)
        cutoff_len = cutoff or config.cutoff_len

        def token_length(record):
            return len(renderer.encode_example(record.messages).input_ids)

    return len(records), dataset_report(records, token_length=token_length, cutoff_len=cutoff_len)
