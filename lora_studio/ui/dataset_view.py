"""Dataset views the data tab shows: record pages, the doctor's summary and histogram, token inspection.

Plain functions over the library (data, templates): no gradio here, so they are easy to test and the
tab module stays about wiring.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..errors import DataError
from ..templates import IGNORE_INDEX

PAGE_SIZE = 20
SAMPLE_FILE = Path(__file__).resolve().parents[2] / "data" / "huanhuan_sample.json"
TRAINED, END = "trained · 训练", "end token · 结束符"
COLORS = {TRAINED: "#8fd18f", END: "#f0a35e"}


def sample_path() -> str:
    """The bundled sample as the data_files value: relative when the studio runs from the project root."""
    relative = Path("data/huanhuan_sample.json")
    return str(relative) if relative.resolve() == SAMPLE_FILE else str(SAMPLE_FILE)


def load(config: RunConfig) -> list:
    from ..data import load_files

    return load_files(config.data_files, config.data_format)


def page_rows(records: list, page: int) -> list[list]:
    """One page of records as table rows: number, system, the turns before the answer, the answer."""
    start = (max(1, page) - 1) * PAGE_SIZE
    rows = []
    for number, record in enumerate(records[start:start + PAGE_SIZE], start=start + 1):
        messages = record.messages
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        turns = [m for m in messages if m["role"] != "system"]
        prompt = "\n".join(f"[{m['role']}] {m['content']}" for m in turns[:-2]) if len(turns) > 2 else ""
        prompt = (prompt + "\n" if prompt else "") + turns[-2]["content"]
        rows.append([number, system, prompt, turns[-1]["content"]])
    return rows


def page_count(records: list) -> int:
    return max(1, -(-len(records) // PAGE_SIZE))


def doctor(records: list, config: RunConfig, renderer, lang: str):
    """(markdown summary, histogram rows) of the dataset as this config would train it."""
    from ..data import dataset_report, dedupe, split

    def token_length(record):
        return len(renderer.encode_example(record.messages).input_ids)

    report = dataset_report(records, token_length=token_length, cutoff_len=config.cutoff_len)
    kept, removed = dedupe(records) if config.dedupe else (records, 0)
    if config.max_samples:
        kept = kept[:config.max_samples]
    train, val = split(kept, config.val_size, config.seed)
    zh = lang == "zh"
    rows = [
        ("记录数" if zh else "Records", report.records),
        ("完全重复" if zh else "Exact duplicates", f"{report.exact_duplicates} ({len(report.duplicate_groups)} "
         + ("组" if zh else "groups") + ")"),
        ("同问不同答" if zh else "Conflicting prompts (same prompt, different answers)", report.conflicting_prompts),
        ("空字段" if zh else "Empty fields", report.empty_fields),
        ("首尾空白" if zh else "Leading/trailing whitespace", report.whitespace),
    ]
    if report.lengths:
        lengths = report.lengths
        rows.append(("token 长度 最小/中位/P95/最大" if zh else "Token length min / median / p95 / max",
                     f"{lengths.min} / {lengths.median:g} / {lengths.p95} / {lengths.max}"))
        rows.append((f"超过截断长度 {config.cutoff_len}（将被截断）" if zh
                     else f"Longer than cutoff_len {config.cutoff_len} (will be truncated)", report.over_cutoff))
    dedupe_note = (f"去重{'开' if config.dedupe else '关'}：去掉 {removed} 条" if zh
                   else f"dedupe {'on' if config.dedupe else 'off'}: {removed} removed")
    rows.append(("训练 / 验证" if zh else "Train / validation", f"{len(train)} / {len(val)} ({dedupe_note})"))
    table = [f"| {k} | {v} |" for k, v in rows]
    lines = [table[0], "|---|---|", *table[1:]]  # the record count heads the table
    for conflict in report.conflicts[:3]:
        records_text = ", ".join(str(i + 1) for i in conflict.records[:6])
        lines.append(f"\n- {'同问不同答' if zh else 'Conflict'}: 「{conflict.prompt[:40]}」 → "
                     f"{conflict.answers} {'种回答' if zh else 'answers'} ({'记录' if zh else 'records'} {records_text})")
    return "\n".join(lines), histogram_rows(report, config.cutoff_len, lang)


# the histogram's columns, which the plot shows as its axis and legend titles
LENGTH, COUNT, FITS = "tokens · token 数", "records · 条数", "cutoff · 截断"


def histogram_rows(report, cutoff_len: int, lang: str) -> list[dict]:
    """Bars of the length histogram, coloured by whether their examples fit in cutoff_len."""
    if not report.lengths:
        return []
    zh = lang == "zh"
    within, partly, over = (("不截断", "部分截断", "截断") if zh else ("fits", "partly truncated", "truncated"))
    rows = []
    width = len(str(report.lengths.histogram[-1][0]))
    for start, end, count in report.lengths.histogram:
        where = within if end <= cutoff_len else over if start > cutoff_len else partly
        # padded with spaces so that the plot's alphabetical order is the numeric one ("  0" < " 50" < "100")
        rows.append({LENGTH: f"{start:>{width}}–{end}", COUNT: count, FITS: where})
    # every colour in every frame: the plot keeps the colour domain of the first frame it drew, so a
    # later cutoff that truncates would otherwise draw its bars in no colour at all
    present = {row[FITS] for row in rows}
    rows += [{LENGTH: rows[0][LENGTH], COUNT: 0, FITS: kind}
             for kind in (within, partly, over) if kind not in present]
    return rows


def token_segments(record, renderer, cutoff_len: int) -> tuple[list[tuple[str, str | None]], dict]:
    """The record as trained: text pieces tagged trained / end token / prompt, and a few counts.

    Byte-level tokenizers split a Chinese character over several tokens; pieces are grown until they
    decode to whole characters so the page never shows broken bytes.
    """
    example = renderer.encode_example(record.messages, cutoff_len)
    tokenizer = renderer.tokenizer
    end_ids = set(renderer.end_of_turn_ids)
    segments, pending, pending_labels = [], [], []
    for token_id, label in zip(example.input_ids, example.labels):
        pending.append(token_id)
        pending_labels.append(label)
        text = tokenizer.decode(pending, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd") and len(pending) < 4:
            continue
        trained = any(label != IGNORE_INDEX for label in pending_labels)
        category = (END if trained and pending[-1] in end_ids else TRAINED) if trained else None
        if category == END:
            text = f"{text}⟂"
        segments.append((text.replace("\n", "↵\n"), category))
        pending, pending_labels = [], []
    counts = {"tokens": len(example.input_ids), "trained": example.trained_tokens,
              "truncated": example.truncated}
    return segments, counts


def pick(records: list, number) -> object:
    if not records:
        raise DataError("the dataset is empty", "data_files", "Load a dataset with at least one record.")
    number = int(number or 1)
    if not 1 <= number <= len(records):
        raise DataError(f"there is no record {number}", "inspector",
                        f"Pick a number from 1 to {len(records)}.")
    return records[number - 1]


def inspector_summary(counts: dict, lang: str) -> str:
    if lang == "zh":
        return (f"共 {counts['tokens']} 个 token，其中 {counts['trained']} 个参与训练"
                + ("；**已截断**" if counts["truncated"] else "") + "。")
    return (f"{counts['tokens']} tokens, {counts['trained']} trained"
            + ("; **truncated** at cutoff_len" if counts["truncated"] else "") + ".")


def keep_upload(source: Path, folder: Path) -> Path:
    """Copy an uploaded file into `folder`, never over a different file already there.

    The same bytes uploaded again reuse the earlier copy; a different file of the same name becomes
    name-2.json, name-3.json, ...: a dataset a past run trained on is never replaced under it.
    """
    import filecmp
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    destination, number = folder / source.name, 1
    while destination.exists():
        if filecmp.cmp(source, destination, shallow=False):
            return destination
        number += 1
        destination = folder / f"{source.stem}-{number}{source.suffix}"
    shutil.copyfile(source, destination)
    return destination
