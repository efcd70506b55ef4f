"""Dataset files in, validated chat conversations out.

Reads alpaca records (instruction / input / output, optional system and history), chat-message
records (OpenAI `messages` with role/content, ShareGPT `conversations` with from/value) and character
scripts (role_name / role_info / dialog, see `data_script`), and normalises every record to one list
of `{"role", "content"}` messages: an optional system message, then user and assistant turns
alternating, ending with the assistant's answer.

JSON and JSON Lines are parsed with the json module (`data_parse`), CSV, TSV and Parquet tables
through `datasets` (`data_table`, one row a record, its columns the keys), so that every problem
becomes a `DataError` naming the file, the record (and its line) and the field, or the missing
column. Statistics live in `data_stats`. `select_records` chooses the records a run trains and
validates on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .config import RunConfig, Setting
from .data_parse import EXTENSIONS, TABLES, Place, check_text, kind_of, parse_records, text_field
from .data_script import SCRIPT_KEYS, is_script, script_fix, script_messages
# re-exported: callers use `data` as the one entry point
from .data_stats import DatasetReport, conversation_key, dataset_report  # noqa: F401
from .errors import DataError
from .i18n import Msg, msg

FORMATS = ("alpaca", "messages", "script")
ALPACA_KEYS = frozenset({"instruction", "output"})
CHAT_KEYS = ("messages", "conversations")
# ShareGPT speaks of human/gpt; everything is stored with OpenAI's role names.
ROLES = MappingProxyType({"system": "system", "user": "user", "human": "user", "assistant": "assistant",
                          "gpt": "assistant"})
ALPACA_EXAMPLE = '{"instruction": "你是谁？", "input": "", "output": "臣妾甄嬛。"}'
CHAT_EXAMPLE = ('{"messages": [{"role": "user", "content": "..."}, '
                '{"role": "assistant", "content": "..."}]}')


@dataclass
class Record:
    index: int            # 0-based position in its file
    source: str           # the file it came from (absolute path)
    raw: dict             # the record exactly as in the file (a table's JSON cells read)
    messages: list[dict]  # normalised conversation, see the module docstring
    speakers: int | None = None   # a script's distinct speakers, the role included (None: not a script)
    left_out: tuple[int, ...] = ()  # a script's dialog lines not in the conversation (data_script)


@dataclass(frozen=True)
class Selection:
    """The records a run trains and validates on, and how they were chosen from the files."""
    train: list[Record]
    val: list[Record]
    total: int    # records read from the files
    removed: int  # exact duplicates dropped (with dedupe on)


def select_records(config: RunConfig, records: list[Record] | None = None) -> Selection:
    """The records a run uses: the files read, deduplicated (`dedupe`), cut to `max_samples` and split.

    The one place this choice is made: training, the dry run and the dataset doctor all call it, so
    none of them can disagree about which records go where. `records` are the files already loaded
    (`load_files(config.data_files, config.data_format)`), for a caller that has them.
    """
    if records is None:
        records = load_files(config.data_files, config.data_format)
    kept, removed = dedupe(records) if config.dedupe else (list(records), 0)
    if config.max_samples:
        kept = kept[:config.max_samples]
    train, val = split(kept, config.val_size, config.seed)
    return Selection(train, val, len(records), removed)


def load_files(paths, data_format: str = "auto") -> list[Record]:
    """Load several dataset files and concatenate their records (each file detected on its own)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError(msg("data.no_files"), Setting.data_files, msg("data.no_files_fix", key=Setting.data_files))
    return [record for path in paths for record in load_records(path, data_format)]


def load_records(path, data_format: str = "auto") -> list[Record]:
    """Read one JSON or JSONL dataset file, validate every record and normalise it to messages."""
    if data_format not in ("auto", *FORMATS):
        raise DataError(msg("data.unknown_format", key=Setting.data_format, value=data_format),
                        Setting.data_format, msg("data.unknown_format_fix", choices=", ".join(("auto", *FORMATS))))
    shown = str(path)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():  # relative to where the user runs the command
        resolved = Path.cwd() / resolved
    records, expected, first = [], None if data_format == "auto" else data_format, None
    entries = parse_records(resolved, shown)
    if EXTENSIONS.get(resolved.suffix.lower()) in TABLES:
        _check_columns(list(entries[0][2]), shown)
    for number, line, raw in entries:
        place = Place(shown, number, line)
        found = _detect(raw, place)
        if expected is None:
            expected, first = found, number
        elif found != expected:
            raise place.error(*_format_mismatch(found, expected, first))
        if found == "script":
            script = script_messages(raw, place)
            records.append(Record(number - 1, str(resolved), raw, script.messages, script.speakers, script.left_out))
            continue
        messages = _alpaca_messages(raw, place) if found == "alpaca" else _chat_messages(raw, place)
        records.append(Record(number - 1, str(resolved), raw, messages))
    return records


def detect_format(raw_record: dict) -> str:
    """'alpaca', 'messages' or 'script' for one record as read from a file; DataError for anything else."""
    return _detect(raw_record, Place(""))


def dedupe(records: list[Record]) -> tuple[list[Record], int]:
    """Drop records whose conversation repeats an earlier one exactly; returns (kept, removed)."""
    seen, kept = set(), []
    for record in records:
        key = conversation_key(record.messages)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)


def split(records: list[Record], val_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out `val_size` of the records for validation, chosen by `seed`; both keep file order."""
    if not 0 <= val_size < 1:
        raise DataError(msg("data.bad_val_size", key=Setting.val_size, value=val_size), Setting.val_size,
                        msg("data.bad_val_size_fix"))
    count = round(len(records) * val_size)
    if val_size > 0 and len(records) > 1:
        count = min(max(count, 1), len(records) - 1)  # a requested split is never empty on either side
    else:
        count = 0
    held_out = set(random.Random(seed).sample(range(len(records)), count))
    train = [r for i, r in enumerate(records) if i not in held_out]
    val = [r for i, r in enumerate(records) if i in held_out]
    return train, val


def to_dataset(records: list[Record]):
    """A `datasets.Dataset` with one column, "messages", ready for a chat template."""
    from datasets import Dataset

    return Dataset.from_dict({"messages": [record.messages for record in records]})


# --- detection -------------------------------------------------------------------------------------
def _alpaca_fix() -> Msg:
    return msg("data.alpaca_fix", example=ALPACA_EXAMPLE)


def _chat_fix() -> Msg:
    return msg("data.chat_fix", example=CHAT_EXAMPLE)


def _detect(raw, place: Place) -> str:
    if not isinstance(raw, dict):
        raise place.error(msg("data.not_an_object", kind=kind_of(raw)),
                          fix=msg("data.not_an_object_fix", fix=_alpaca_fix()))
    found = [kind for kind, present in (("alpaca", bool(ALPACA_KEYS & raw.keys())),
                                        ("messages", any(key in raw for key in CHAT_KEYS)),
                                        ("script", is_script(raw))) if present]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(repr(k) for k in raw) or msg("data.no_keys")
    what = (msg("data.mixes_formats", keys=keys, formats=", ".join(found)) if found
            else msg("data.unknown_record", keys=keys))
    raise place.error(what, fix=msg("data.unknown_record_fix"))


def _check_columns(columns: list[str], shown: str) -> None:
    """A table's columns name one format and hold the columns it needs; else the file and the column named."""
    listed = ", ".join(repr(c) for c in columns)
    try:
        found = _detect(dict.fromkeys(columns), Place(shown))
    except DataError:
        raise DataError(msg("data.unknown_columns", columns=listed), shown, msg("data.unknown_record_fix")) from None
    needed = {"alpaca": ("instruction", "output"), "script": SCRIPT_KEYS}.get(found, ())
    for column in needed:
        if column not in columns:
            fix = _alpaca_fix() if found == "alpaca" else script_fix()
            raise DataError(msg("data.missing_column", column=column, columns=listed), shown, fix)


def _format_mismatch(found: str, expected: str, first: int | None) -> tuple[Msg, None, Msg]:
    if first is None:  # the user named the format
        return (msg("data.format_not_as_set", found=found, key=Setting.data_format, expected=expected), None,
                msg("data.format_not_as_set_fix", key=Setting.data_format, found=found))
    return (msg("data.mixed_formats", found=found, first=first, expected=expected), None,
            msg("data.mixed_formats_fix"))


# --- alpaca ----------------------------------------------------------------------------------------
def _alpaca_messages(raw: dict, place: Place) -> list[dict]:
    fix = _alpaca_fix()
    instruction = text_field(raw, "instruction", place, fix)
    user_input = text_field(raw, "input", place, fix, required=False)
    output = text_field(raw, "output", place, fix)
    system = text_field(raw, "system", place, fix, required=False)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += _history_messages(raw.get("history"), place)
    prompt = f"{instruction}\n{user_input}" if user_input.strip() else instruction
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _history_messages(history, place: Place) -> list[dict]:
    fix = msg("data.history_fix", example='[["你好", "皇上万福。"]]')
    if history is None:
        return []
    if not isinstance(history, list):
        raise place.error(msg("data.history_not_list", kind=kind_of(history)), "history", fix)
    messages = []
    for i, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            what = (msg("data.history_wrong_size", size=len(pair)) if isinstance(pair, list)
                    else msg("data.history_not_pair", kind=kind_of(pair)))
            raise place.error(what, f"history[{i}]", fix)
        for j, role in enumerate(("user", "assistant")):
            content = check_text(pair[j], f"history[{i}][{j}]", place, fix, allow_empty=False)
            messages.append({"role": role, "content": content})
    return messages


# --- chat messages ---------------------------------------------------------------------------------
def _chat_messages(raw: dict, place: Place) -> list[dict]:
    key = "messages" if "messages" in raw else "conversations"
    turns, fix = raw[key], _chat_fix()
    if not isinstance(turns, list):
        raise place.error(msg("data.turns_not_list", kind=kind_of(turns)), key, fix)
    if not turns:
        raise place.error(msg("data.empty_conversation"), key, msg("data.empty_conversation_fix"))
    messages, expected = [], "user"
    for i, turn in enumerate(turns):
        field = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise place.error(msg("data.message_not_object", kind=kind_of(turn)), field, fix)
        role_key = "from" if "from" in turn and "role" not in turn else "role"
        content_key = "value" if "value" in turn and "content" not in turn else "content"
        name = text_field(turn, role_key, place, fix, prefix=field)
        role = ROLES.get(name.strip().lower())
        if role is None:
            raise place.error(msg("data.unknown_role", name=name), f"{field}.{role_key}",
                              msg("data.unknown_role_fix"))
        content = text_field(turn, content_key, place, fix, prefix=field, allow_empty=role == "system")
        if role == "system":
            if i:
                raise place.error(msg("data.late_system"), f"{field}.{role_key}", msg("data.late_system_fix"))
            if content.strip():  # an empty system prompt means "none"
                messages.append({"role": role, "content": content})
            continue
        if role != expected:
            raise place.error(msg("data.out_of_order", name=name, expected=msg(f"data.expected_{expected}")),
                              f"{field}.{role_key}", msg("data.out_of_order_fix"))
        messages.append({"role": role, "content": content})
        expected = "assistant" if role == "user" else "user"
    if expected != "user":
        raise place.error(msg("data.no_final_answer"), f"{key}[{len(turns) - 1}]", msg("data.no_final_answer_fix"))
    return messages
