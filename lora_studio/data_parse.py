"""Dataset files on disk to raw JSON records with their positions, or a DataError saying where.

A JSON file is a list of records, a JSONL file one record per line. JSON lists are walked one record
at a time with `raw_decode`, so every record keeps the line it starts on and a syntax error can name
the record it is in. `data.py` turns the raw records into conversations.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMATS_HELP = "see data/README.md for the accepted formats"
SYNTAX_FIX = "Fix the JSON there; a missing comma, quote or bracket is the usual cause."
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own definition of whitespace


@dataclass(frozen=True)
class Place:
    """Where a problem is: a file, optionally a record (1-based) and the line it starts on."""

    file: str
    number: int | None = None
    line: int | None = None

    def where(self, field: str | None = None) -> str:
        parts = [self.file] if self.file else []
        if self.number is not None:
            parts.append(f"record {self.number}" + (f" (line {self.line})" if self.line else ""))
        if field:
            parts.append(f"field '{field}'")
        return ", ".join(parts)

    def error(self, what: str, field: str | None = None, fix: str = "") -> DataError:
        return DataError(what, self.where(field), fix)


def parse_records(path: Path, shown: str) -> list[tuple[int, int, object]]:
    """(record number, line, raw value) for each record of the file at `path` (`shown` in messages)."""
    kind = _check_file(path, shown)
    text = _read_text(path, shown)
    entries = _parse_jsonl(text, shown) if kind == "jsonl" else _parse_json(text, shown)
    if not entries:
        raise DataError("the file holds no records", shown, f"Add at least one record; {FORMATS_HELP}.")
    return entries


def _check_file(path: Path, shown: str) -> str:
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)[:5]
        example = f", e.g. {path / inside[0]}" if inside else ""
        raise DataError("this is a directory, not a file", shown,
                        f"Name a .json or .jsonl file inside it{example}.")
    if not path.exists():
        looked = f" (looked for {path})" if str(path) != shown else ""
        if path.name == "huanhuan.json":
            fix = ("The full Zhen Huan set is not bundled: data/README.md says how to download it into "
                   "data/huanhuan.json. The bundled data/huanhuan_sample.json works offline.")
        else:
            fix = f"Check the path; relative paths are read from the current directory ({Path.cwd()})."
        raise DataError(f"file not found{looked}", shown, fix)
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unsupported file type '{path.suffix or 'no extension'}'", shown,
                        "Use .json (a list of records) or .jsonl (one record per line). Convert CSV, Excel "
                        "or Parquet first, e.g. pandas: df.to_json('data.jsonl', orient='records', "
                        "lines=True, force_ascii=False).")
    return kind


def _read_text(path: Path, shown: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})", shown,
                        "Check that the file exists and that you may read it.") from None
    if not data:
        raise DataError("the file is empty", shown, f"Add records; {FORMATS_HELP}.")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows editors add one
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        guess = ("it looks like UTF-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
                 else "GBK or another legacy encoding is a common cause")
        raise DataError(f"not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}); "
                        f"{guess}", shown,
                        "Re-save the file as UTF-8 (your editor's 'Save with encoding' or "
                        "`iconv -f GBK -t UTF-8 in.json > out.json`).") from None
    if not text.strip():
        raise DataError("the file contains only whitespace", shown, f"Add records; {FORMATS_HELP}.")
    return text


def _parse_jsonl(text: str, shown: str) -> list[tuple[int, int, object]]:
    entries = []
    for line_number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 is valid in JSON
        if not line.strip():
            continue
        place = Place(shown, len(entries) + 1, line_number)
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            fix = ("This looks like a JSON list, not JSON Lines: rename the file to .json."
                   if line.lstrip().startswith("[") else
                   "Each line must be one complete JSON object; a missing quote, comma or brace is the "
                   "usual cause.")
            raise place.error(f"invalid JSON: {exc.msg} at column {exc.colno}", fix=fix) from None
        entries.append((place.number, line_number, value))
    return entries


def _parse_json(text: str, shown: str) -> list[tuple[int, int, object]]:
    pos = _skip(text, 0)
    if text[pos] != "[":
        raise _shape_error(_loads(text, shown), shown)
    decoder, lines, entries = json.JSONDecoder(), _LineCounter(text), []
    pos = _skip(text, pos + 1)
    while not text.startswith("]", pos):
        place = Place(shown, len(entries) + 1, lines.line_at(pos))
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise place.error(f"invalid JSON: {_syntax(exc)}", fix=SYNTAX_FIX) from None
        entries.append((place.number, place.line, value))
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            if text.startswith("]", pos):
                raise DataError(f"invalid JSON: trailing comma after the last record at {_at(text, pos)}",
                                shown, "Delete the comma before the closing ']'.")
        elif not text.startswith("]", pos):
            _loads(text, shown, f" after record {len(entries)}")  # json names the exact problem
            raise DataError(f"invalid JSON after record {len(entries)} at {_at(text, pos)}", shown,
                            "Separate records with commas and close the list with ']'.")
    end = _skip(text, pos + 1)
    if end < len(text):
        raise DataError(f"invalid JSON: unexpected text after the closing ']' at {_at(text, end)}", shown,
                        "Delete it, or move those records inside the list.")
    return entries


def _loads(text: str, shown: str, context: str = ""):
    """Parse the whole text, turning a syntax error into a DataError with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data") and text.lstrip().startswith("{"):
            fix = "Rename the file to .jsonl, or put the records in a list: [ {...}, {...} ]."
            raise DataError("several JSON objects follow one another: this is JSON Lines, not JSON", shown,
                            fix) from None
        raise DataError(f"invalid JSON{context}: {_syntax(exc)}", shown, SYNTAX_FIX) from None


def _shape_error(value, shown: str) -> DataError:
    fix = "A .json dataset is a list of records: [ {...}, {...} ]; for one record per line use .jsonl."
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:10]) or "none"
        lists = [k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if {"instruction", "messages", "conversations"} & value.keys():
            fix = "It looks like a single record: wrap it in a list, [ {...} ]."
        elif lists:
            fix = f"The records may be the list under '{lists[0]}': save that list alone as the file."
        return DataError(f"the top level is an object (keys: {keys}), not a list of records", shown, fix)
    return DataError(f"the top level is {kind_of(value)}, not a list of records", shown, fix)


def kind_of(value) -> str:
    """How a JSON value is named in messages: 'a number', 'a list', 'null', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _syntax(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"


def _at(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line}, column {pos - text.rfind(chr(10), 0, pos)}"


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()


class _LineCounter:
    """Line numbers of increasing positions, counting each stretch of text once (files can be large)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def line_at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line
