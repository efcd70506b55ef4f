"""Dataset files on disk to raw records with their positions, or a DataError saying where.

A JSON file is a list of records, a JSONL file one record per line. JSON lists are walked one record
at a time with `raw_decode`, so every record keeps the line it starts on and a syntax error can name
the record it is in. CSV, TSV and Parquet tables are read by `data_table` (one row a record).
`data.py` turns the raw records into conversations; the field checks they share live here.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .errors import DataError
from .i18n import Msg, msg

EXTENSIONS = MappingProxyType({".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                               ".tsv": "tsv", ".parquet": "parquet"})
TABLES = frozenset({"csv", "tsv", "parquet"})  # read through `datasets` by data_table
LIST_EXAMPLE = "[ {...}, {...} ]"
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own definition of whitespace


@dataclass(frozen=True)
class Place:
    """Where a problem is: a file, optionally a record (1-based) and the line it starts on."""

    file: str
    number: int | None = None
    line: int | None = None

    def where(self, field: str | None = None) -> Msg | str:
        """'file, record 2 (line 3), field 'output'' in the reader's language; the file name as it is."""
        parts: list[Msg | str] = [self.file] if self.file else []
        if self.number is not None:
            parts.append(msg("data.where_record_line", number=self.number, line=self.line) if self.line
                         else msg("data.where_record", number=self.number))
        if field:
            parts.append(msg("data.where_field", field=field))
        where = parts[0] if parts else ""
        for part in parts[1:]:
            where = msg("data.where_join", place=where, detail=part)
        return where

    def error(self, what: Msg, field: str | None = None, fix: Msg | None = None) -> DataError:
        return DataError(what, self.where(field), fix)


def parse_records(path: Path, shown: str) -> list[tuple[int, int, object]]:
    """(record number, line, raw value) for each record of the file at `path` (`shown` in messages)."""
    kind = _check_file(path, shown)
    if kind in TABLES:
        from .data_table import table_records

        return table_records(path, shown, kind)
    text = read_text(path, shown)
    entries = _parse_jsonl(text, shown) if kind == "jsonl" else _parse_json(text, shown)
    if not entries:
        raise DataError(msg("data.no_records"), shown, msg("data.add_record_fix"))
    return entries


def _check_file(path: Path, shown: str) -> str:
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)[:5]
        fix = (msg("data.is_directory_fix_example", example=str(path / inside[0])) if inside
               else msg("data.is_directory_fix"))
        raise DataError(msg("data.is_directory"), shown, fix)
    if not path.exists():
        what = msg("data.not_found_looked", path=str(path)) if str(path) != shown else msg("data.not_found")
        fix = (msg("data.full_set_fix") if path.name == "huanhuan.json"
               else msg("data.not_found_fix", cwd=str(Path.cwd())))
        raise DataError(what, shown, fix)
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(msg("data.unsupported_type", suffix=path.suffix or msg("data.no_extension")), shown,
                        msg("data.unsupported_type_fix", example="pd.read_excel('data.xlsx').to_csv('data.csv', "
                                                                  "index=False)"))
    return kind


def read_text(path: Path, shown: str) -> str:
    """The file's text (a UTF-8 BOM dropped), or a DataError for an empty, unreadable or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(msg("data.cannot_read", detail=exc.strerror or str(exc)), shown,
                        msg("data.cannot_read_fix")) from None
    if not data:
        raise DataError(msg("data.empty_file"), shown, msg("data.add_records_fix"))
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows editors add one
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        guess = msg("data.looks_utf16" if utf16 else "data.looks_legacy")
        what = msg("data.not_utf8", byte=f"0x{data[offset]:02x}", offset=offset,
                   line=data.count(b"\n", 0, offset) + 1, guess=guess)
        raise DataError(what, shown, msg("data.not_utf8_fix",
                                         command="`iconv -f GBK -t UTF-8 in.json > out.json`")) from None
    if not text.strip():
        raise DataError(msg("data.only_whitespace"), shown, msg("data.add_records_fix"))
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
            fix = msg("data.jsonl_is_list_fix" if line.lstrip().startswith("[") else "data.jsonl_line_fix")
            detail = msg("data.json_at_column", detail=exc.msg, column=exc.colno)
            raise place.error(msg("data.invalid_json", detail=detail), fix=fix) from None
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
            raise place.error(msg("data.invalid_json", detail=_syntax(exc)), fix=msg("data.syntax_fix")) from None
        entries.append((place.number, place.line, value))
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
            if text.startswith("]", pos):
                raise DataError(msg("data.trailing_comma", at=_at(text, pos)), shown,
                                msg("data.trailing_comma_fix"))
        elif not text.startswith("]", pos):
            _loads(text, shown, after=len(entries))  # json names the exact problem
            raise DataError(msg("data.after_record", number=len(entries), at=_at(text, pos)), shown,
                            msg("data.after_record_fix"))
    end = _skip(text, pos + 1)
    if end < len(text):
        raise DataError(msg("data.text_after_list", at=_at(text, end)), shown, msg("data.text_after_list_fix"))
    return entries


def _loads(text: str, shown: str, after: int | None = None):
    """Parse the whole text, turning a syntax error into a DataError with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data") and text.lstrip().startswith("{"):
            raise DataError(msg("data.json_lines_in_json"), shown,
                            msg("data.json_lines_in_json_fix", example=LIST_EXAMPLE)) from None
        what = (msg("data.invalid_json", detail=_syntax(exc)) if after is None
                else msg("data.invalid_json_after", number=after, detail=_syntax(exc)))
        raise DataError(what, shown, msg("data.syntax_fix")) from None


def _shape_error(value, shown: str) -> DataError:
    fix = msg("data.shape_fix", example=LIST_EXAMPLE)
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:10]) or msg("data.no_keys")
        lists = [k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if {"instruction", "messages", "conversations", "dialog"} & value.keys():
            fix = msg("data.single_record_fix", example="[ {...} ]")
        elif lists:
            fix = msg("data.records_under_fix", key=lists[0])
        return DataError(msg("data.top_level_object", keys=keys), shown, fix)
    return DataError(msg("data.top_level_other", kind=kind_of(value)), shown, fix)


def text_field(raw: dict, key: str, place: Place, fix: Msg, *, required: bool = True, prefix: str = "",
               allow_empty: bool | None = None) -> str:
    """The string field `key` of `raw`: optional fields may be absent, null or empty."""
    field = f"{prefix}.{key}" if prefix else key
    value = raw.get(key)
    if key not in raw or (value is None and not required):
        if required:
            raise place.error(msg("data.missing"), field, fix)
        return ""
    if allow_empty is None:
        allow_empty = not required
    return check_text(value, field, place, fix, allow_empty=allow_empty)


def check_text(value, field: str, place: Place, fix: Msg, *, allow_empty: bool) -> str:
    """`value` when it is a string (with text in it, unless `allow_empty`); else a DataError at `field`."""
    if not isinstance(value, str):
        raise place.error(msg("data.not_text", kind=kind_of(value)), field, msg("data.not_text_fix", fix=fix))
    if not allow_empty and not value.strip():
        raise place.error(msg("data.empty_text"), field, msg("data.empty_text_fix"))
    return value


def kind_of(value) -> Msg | str:
    """How a JSON value is named in messages: 'a number', 'a list', 'null', ..."""
    if value is None:
        return msg("data.kind_null")
    if isinstance(value, bool):
        return msg("data.kind_boolean")
    if isinstance(value, (int, float)):
        return msg("data.kind_number")
    kinds = {str: "data.kind_string", list: "data.kind_list", dict: "data.kind_object"}
    return msg(kinds[type(value)]) if type(value) in kinds else type(value).__name__


def _syntax(exc: json.JSONDecodeError) -> Msg:
    # json's own description of the problem (exc.msg) is Python's text, quoted as it is
    return msg("data.json_at", detail=exc.msg, line=exc.lineno, column=exc.colno)


def _at(text: str, pos: int) -> Msg:
    line = text.count("\n", 0, pos) + 1
    return msg("data.position", line=line, column=pos - text.rfind(chr(10), 0, pos))


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
