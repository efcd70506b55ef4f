"""What the CLI prints: side-by-side answers, dataset reports and dry-run estimates."""

from __future__ import annotations

import shutil
import textwrap
import unicodedata
from pathlib import Path

from .config import RunConfig


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _wrap(text: str, width: int) -> list[str]:
    """Wrap by display width, so Chinese (two columns a character) lines up."""
    lines = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for ch in paragraph:
            if _width(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
    return lines


def print_side_by_side(prompt: str, base: str, tuned: str) -> None:
    columns = shutil.get_terminal_size((100, 20)).columns
    print(f"\n> {prompt}")
    if columns < 60:
        print(f"[基础模型 base]\n{base}\n[微调后 tuned]\n{tuned}")
        return
    half = (columns - 3) // 2
    left, right = _wrap(base, half), _wrap(tuned, half)
    print(_pad("基础模型 base", half) + " | 微调后 tuned")
    print("-" * half + "-+-" + "-" * half)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(_pad(a, half) + " | " + b)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def print_data_report(path: Path, data_format: str, model: str | None, cutoff: int | None,
                      system: str) -> None:
    from .data import dataset_report, load_records

    records = load_records(path, data_format)
    token_length, cutoff_len = None, cutoff
    if model:
        from . import models
        from .templates import ChatRenderer

        config = RunConfig(model_name_or_path=model)
        model_path = models.resolve_model_path(model)
        model_config = models.read_model_config(model_path)
        tokenizer = models.load_tokenizer(model_path, config, model_config)
        renderer = ChatRenderer(tokenizer, "auto", model_config.get("model_type"), system)
        cutoff_len = cutoff or config.cutoff_len

        def token_length(record):
            return len(renderer.encode_example(record.messages).input_ids)

    report = dataset_report(records, token_length=token_length, cutoff_len=cutoff_len)
    print(f"{path}: {len(records)} records, format OK")
    print(report.to_text())


def print_dry_run(config: RunConfig) -> None:
    from .estimate import dry_run

    report = dry_run(config)
    print(report.to_text())
