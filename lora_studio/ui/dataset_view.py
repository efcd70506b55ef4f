"""Dataset views the data tab shows: record pages, the doctor's summary and histogram, token inspection.

Plain functions over the library (data, templates): no gradio here, so they are easy to test and the
tab module stays about wiring.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from ..config import RunConfig, Setting
from ..data_stats import turn_count
from ..errors import DataError
from ..i18n import LANGUAGES, msg, render, text
from ..templates import IGNORE_INDEX

PAGE_SIZE = 20
SAMPLE_FILE = Path(__file__).resolve().parents[2] / "data" / "huanhuan_sample.json"
# token categories of the inspector and the histogram's bar kinds: catalogue key -> colour
TOKEN_COLORS = MappingProxyType({"ui.token_trained": "#8fd18f", "ui.token_end": "#f0a35e"})
FIT_COLORS = MappingProxyType({"ui.fits": "#6fbf73", "ui.partly_truncated": "#e0b050", "ui.truncated": "#d9534f"})
# the histogram's columns; the page titles its axes and legend in the reader's language
LENGTH, COUNT, FITS = "tokens", "records", "cutoff"


def color_map(colors, languages=LANGUAGES) -> dict[str, str]:
    """{label: colour}: a category is drawn by its label, which is in the reader's language."""
    return {text(key, lang): color for key, color in colors.items() for lang in languages}


def sample_path() -> str:
    """The bundled sample as the data_files value: relative when the studio runs from the project root."""
    relative = Path("data/huanhuan_sample.json")
    return str(relative) if relative.resolve() == SAMPLE_FILE else str(SAMPLE_FILE)


def load(config: RunConfig) -> list:
    from ..data import load_files

    return load_files(config.data_files, config.data_format)


def page_rows(records: list, page: int, lang: str) -> list[list]:
    """One page of records as table rows: number, system, the turns before the answer, the answer."""
    start = (max(1, page) - 1) * PAGE_SIZE
    rows = []
    for number, record in enumerate(records[start:start + PAGE_SIZE], start=start + 1):
        messages = record.messages
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        turns = [m for m in messages if m["role"] != "system"]
        earlier = [f"[{text('ui.col_' + m['role'], lang)}] {m['content']}" for m in turns[:-2]]
        prompt = "\n".join([*earlier, turns[-2]["content"]])
        rows.append([number, system, prompt, turns[-1]["content"]])
    return rows


def table_headers(lang: str) -> list[str]:
    return ["#", *(text(f"ui.col_{role}", lang) for role in ("system", "user", "assistant"))]


def page_count(records: list) -> int:
    return max(1, -(-len(records) // PAGE_SIZE))


def doctor(records: list, config: RunConfig, renderer, lang: str):
    """(markdown summary, histogram rows) of the dataset as this config would train it."""
    from ..data import dataset_report, select_records

    def token_length(record):
        return len(renderer.encode_example(record.messages).input_ids)

    report = dataset_report(records, token_length=token_length, cutoff_len=config.cutoff_len)
    chosen = select_records(config, records)
    rows = [
        (msg("ui.doctor_records"), report.records),
        (msg("ui.doctor_duplicates"), text("ui.doctor_groups", lang, count=report.exact_duplicates,
                                           groups=len(report.duplicate_groups))),
        (msg("ui.doctor_conflicting"), report.conflicting_prompts),
        (msg("ui.doctor_empty"), report.empty_fields),
        (msg("ui.doctor_whitespace"), report.whitespace),
        *script_rows(report, lang),
    ]
    if report.lengths:
        lengths = report.lengths
        rows.append((msg("ui.doctor_lengths"), f"{lengths.min} / {lengths.median:g} / {lengths.p95} / {lengths.max}"))
        rows.append((msg("ui.doctor_over_cutoff", key=Setting.cutoff_len, cutoff=config.cutoff_len),
                     report.over_cutoff))
    dedupe = msg("ui.dedupe_on" if config.dedupe else "ui.dedupe_off", removed=chosen.removed)
    rows.append((msg("ui.doctor_split"), text("ui.doctor_split_value", lang, train=len(chosen.train),
                                              val=len(chosen.val), dedupe=dedupe)))
    table = [f"| {label.render(lang)} | {value} |" for label, value in rows]
    lines = [table[0], "|---|---|", *table[1:]]  # the record count heads the table
    for conflict in report.conflicts[:3]:
        # the prompt is data: 「」 mark where it starts and ends
        lines.append("\n- " + text("ui.doctor_conflict", lang, prompt=conflict.prompt[:40], answers=conflict.answers,
                                    records=", ".join(str(i + 1) for i in conflict.records[:6])))
    return "\n".join(lines), histogram_rows(report, config.cutoff_len, lang)


def script_rows(report, lang: str) -> list[tuple]:
    """The doctor's rows about turns, and about speakers and lines left out when scripts were read."""
    if not report.shows_turns():
        return []
    turns = report.turns
    rows = [(msg("data.doctor_turns"), f"{turns.min} / {turns.median:g} / {turns.max}")]
    if report.scripts:
        where = [msg("data.record_name", number=i + 1) for i in report.left_out_records[:5]]
        left_out = (text("data.doctor_left_out_where", lang, lines=report.left_out, where=where) if where
                    else report.left_out)
        rows += [(msg("data.doctor_speakers"), render(report.speaker_counts(), lang)),
                 (msg("data.doctor_left_out"), left_out)]
    return rows


def histogram_rows(report, cutoff_len: int, lang: str) -> list[dict]:
    """Bars of the length histogram, coloured by whether their examples fit in cutoff_len."""
    if not report.lengths:
        return []
    within, partly, over = (text(key, lang) for key in FIT_COLORS)
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


def token_segments(record, renderer, cutoff_len: int, lang: str) -> tuple[list[tuple[str, str | None]], dict]:
    """The record as trained: text pieces tagged trained / end token / prompt, and a few counts.

    Byte-level tokenizers split a Chinese character over several tokens; pieces are grown until they
    decode to whole characters so the page never shows broken bytes.
    """
    trained_label, end_label = (text(key, lang) for key in TOKEN_COLORS)
    example = renderer.encode_example(record.messages, cutoff_len)
    tokenizer = renderer.tokenizer
    end_ids = set(renderer.end_of_turn_ids)
    segments, pending, pending_labels = [], [], []
    for token_id, label in zip(example.input_ids, example.labels):
        pending.append(token_id)
        pending_labels.append(label)
        piece = tokenizer.decode(pending, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if piece.endswith("\ufffd") and len(pending) < 4:
            continue
        trained = any(label != IGNORE_INDEX for label in pending_labels)
        category = (end_label if trained and pending[-1] in end_ids else trained_label) if trained else None
        if category == end_label:
            piece = f"{piece}⟂"
        segments.append((piece.replace("\n", "↵\n"), category))
        pending, pending_labels = [], []
    counts = {"tokens": len(example.input_ids), "trained": example.trained_tokens,
              "truncated": example.truncated, "turns": turn_count(record), "speakers": record.speakers,
              "left_out": len(record.left_out)}
    return segments, counts


def pick(records: list, number) -> object:
    if not records:
        raise DataError(msg("ui.dataset_empty"), Setting.data_files, msg("ui.dataset_empty_fix"))
    number = int(number or 1)
    if not 1 <= number <= len(records):
        raise DataError(msg("ui.no_record", number=number), msg("ui.where_inspector"),
                        msg("ui.no_record_fix", count=len(records)))
    return records[number - 1]


def inspector_summary(counts: dict, lang: str) -> str:
    """Tokens and trained tokens of the record, then its turns (and a script's speakers and lines left out)."""
    key = "ui.inspector_truncated" if counts["truncated"] else "ui.inspector_summary"
    summary = text(key, lang, tokens=counts["tokens"], trained=counts["trained"], key=Setting.cutoff_len)
    if counts.get("speakers") is not None:
        turns = text("data.inspector_script", lang, turns=counts["turns"], speakers=counts["speakers"],
                     left_out=counts["left_out"])
    else:
        turns = text("data.inspector_turns", lang, turns=counts.get("turns", 0))
    return f"{summary} {turns}"
