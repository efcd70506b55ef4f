"""CSV, TSV and Parquet dataset files to raw records, read through the `datasets` library.

One row is one record and its columns are the record's keys, for every format: alpaca
(instruction, input, output, system, history), chat (messages or conversations) and character
scripts (role_name, role_info, dialog; see data_script). CSV cells are text: a cell of a structured
column (messages, conversations, history) holds JSON, and a dialog cell holds either a JSON list
(`["皇上：……", "甄嬛：……"]`) or one line per line. Parquet columns hold lists and structs as they
are; a JSON string there is read the same way as in a CSV.

Positions: record N is row N. In a CSV the line is where the row starts: the header is line 1, and
a quoted cell may span lines. A CSV is first read row by row with Python's csv module, so that a
broken quote or a row with the wrong number of cells is named by its line; `datasets` then loads it
with every column as text (no guessing of numbers; an empty cell stays an empty text).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import tempfile
from pathlib import Path
from types import MappingProxyType

from .data_parse import Place, read_text
from .errors import DataError, first_line
from .i18n import msg

STRUCTURED = ("messages", "conversations", "history")  # JSON in a CSV cell
SEPARATORS = MappingProxyType({"csv": ",", "tsv": "\t"})
NAMES = MappingProxyType({"csv": "CSV", "tsv": "TSV", "parquet": "Parquet"})  # a file type as people write it
# what each JSON cell looks like, for the fix of a bad one
CELL_EXAMPLES = MappingProxyType({
    "messages": '[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "皇上万福。"}]',
    "conversations": '[{"from": "human", "value": "你好"}, {"from": "gpt", "value": "皇上万福。"}]',
    "history": '[["你好", "皇上万福。"]]',
    "dialog": '["皇上：你来了。", "甄嬛：臣妾给皇上请安。"]',
})


def table_records(path: Path, shown: str, kind: str) -> list[tuple[int, int | None, dict]]:
    """(record number, line or None, row) for each row of a CSV, TSV or Parquet file."""
    if kind == "parquet":
        rows, lines = _load(path, shown, kind, {}), None
    else:
        header, lines = _check_csv(read_text(path, shown), shown, SEPARATORS[kind])
        from datasets import Features, Value

        options = {"sep": SEPARATORS[kind], "features": Features({name: Value("string") for name in header}),
                   "na_filter": False, "encoding": "utf-8-sig"}
        rows = _load(path, shown, kind, options)
        if len(rows) != len(lines):  # the two readers disagree about a row: name records only
            lines = None
    if not rows:
        raise DataError(msg("data.no_records"), shown, msg("data.add_record_fix"))
    entries = []
    for number, row in enumerate(rows, 1):
        place = Place(shown, number, lines[number - 1] if lines else None)
        entries.append((number, place.line, _decoded(row, place)))
    return entries


def table_columns(path: Path, kind: str) -> list[str] | None:
    """The column names of a table file (a CSV's header, a Parquet schema), None when they cannot be read.

    For a caller that decides whether a file is a dataset before the library reads, and quotes, it.
    """
    try:
        if kind == "parquet":
            import pyarrow.parquet

            return list(pyarrow.parquet.read_schema(path).names)
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle, delimiter=SEPARATORS[kind], strict=True), None)
    except (OSError, ValueError, csv.Error):  # pyarrow's errors and UTF-8's are ValueErrors
        return None


def _check_csv(text: str, shown: str, separator: str) -> tuple[list[str], list[int]]:
    """(header, the line each row starts on), or a DataError naming the line that cannot be read."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    header, starts, end = None, [], 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:
                continue  # a blank line, as pandas skips it
            if header is None:
                header = _check_header(row, shown)
            elif len(row) != len(header):
                raise Place(shown, len(starts) + 1, start).error(
                    msg("data.csv_cells", cells=len(row), columns=len(header)), fix=msg("data.csv_cells_fix"))
            else:
                starts.append(start)
    except csv.Error as exc:  # Python's own text of the problem, quoted as it is
        if header is None:
            raise DataError(msg("data.invalid_csv_header", detail=str(exc)), shown, msg("data.csv_quote_fix")) from None
        raise Place(shown, len(starts) + 1, end + 1).error(msg("data.invalid_csv", detail=str(exc)),
                                                           fix=msg("data.csv_quote_fix")) from None
    if header is None:
        raise DataError(msg("data.only_whitespace"), shown, msg("data.add_records_fix"))
    if not starts:
        raise DataError(msg("data.no_records"), shown, msg("data.add_record_fix"))
    return header, starts


def _check_header(row: list[str], shown: str) -> list[str]:
    for column, name in enumerate(row, 1):
        if not name.strip():
            raise DataError(msg("data.csv_unnamed_column", column=column), shown, msg("data.csv_header_fix"))
        if row.index(name) != column - 1:
            raise DataError(msg("data.csv_repeated_column", name=name), shown, msg("data.csv_header_fix"))
    return row


@contextlib.contextmanager
def _quiet():
    """No progress bars or reader warnings from `datasets` while a file is read: errors are ours to tell."""
    import datasets

    bars_off, level = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its readers log the error they then raise
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def _load(path: Path, shown: str, kind: str, options: dict) -> list[dict]:
    """Every row of the file as a dict, read by `datasets` into memory (its cache a folder removed after)."""
    import datasets

    try:
        with _quiet(), tempfile.TemporaryDirectory(prefix="lora-studio-table-") as cache:
            # data_files are glob patterns: a name with [ or * in it must be escaped
            builder = "parquet" if kind == "parquet" else "csv"
            table = datasets.load_dataset(builder, data_files=glob.escape(str(path)), split="train",
                                          cache_dir=cache, keep_in_memory=True, **options)
            return table.to_list()
    except (datasets.exceptions.DatasetsError, ValueError, OSError) as exc:  # pyarrow's and pandas' are these
        cause = exc.__cause__ or exc
        raise DataError(msg("data.table_unreadable", kind=NAMES[kind], detail=first_line(cause)), shown,
                        msg("data.table_unreadable_fix")) from None


def _decoded(row: dict, place: Place) -> dict:
    """The row with its JSON cells read: structured columns, and a dialog written as a JSON list."""
    row = dict(row)
    for key in STRUCTURED:
        value = row.get(key)
        if not isinstance(value, str):
            continue
        if not value.strip():
            if key == "history":
                row[key] = None  # optional: an empty cell is no history
                continue
            raise place.error(msg("data.empty_text"), key, msg("data.cell_json_fix", example=CELL_EXAMPLES[key]))
        row[key] = _json_cell(value, key, place)
    dialog = row.get("dialog")
    if isinstance(dialog, str) and dialog.strip().startswith("[") and dialog.strip().endswith("]"):
        row["dialog"] = _json_cell(dialog, "dialog", place)
    return row


def _json_cell(value: str, key: str, place: Place):
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        detail = msg("data.json_at", detail=exc.msg, line=exc.lineno, column=exc.colno)
        raise place.error(msg("data.cell_not_json", detail=detail), key,
                          msg("data.cell_json_fix", example=CELL_EXAMPLES[key])) from None
