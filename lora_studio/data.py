"""Dataset files in, validated chat conversations out.

Reads alpaca records (instruction / input / output, optional system and history) and chat-message
records (OpenAI `messages` with role/content, ShareGPT `conversations` with from/value) from JSON or
JSON Lines, and normalises every record to one list of `{"role", "content"}` messages: an optional
system message, then user and assistant turns alternating, ending with the assistant's answer.

Parsing uses the json module directly (not `datasets.load_dataset`) so that every problem becomes a
`DataError` naming the file, the record (and its line) and the field. Statistics live in `data_stats`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .data_parse import Place, kind_of, parse_records
# re-exported: callers use `data` as the one entry point
from .data_stats import DatasetReport, conversation_key, dataset_report  # noqa: F401
from .errors import DataError

FORMATS = ("alpaca", "messages")
ALPACA_KEYS = {"instruction", "output"}
CHAT_KEYS = ("messages", "conversations")
# ShareGPT speaks of human/gpt; everything is stored with OpenAI's role names.
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
ALPACA_FIX = ("An alpaca record needs 'instruction' and 'output' ('input', 'system' and 'history' are "
              'optional), e.g. {"instruction": "你是谁？", "input": "", "output": "臣妾甄嬛。"}.')
_AN = {"user": "a user", "assistant": "an assistant"}
CHAT_FIX = ("A chat record is {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, "
            "{\"role\": \"assistant\", \"content\": \"...\"}]} (or ShareGPT's \"conversations\" with "
            "\"from\" and \"value\").")


@dataclass
class Record:
    index: int            # 0-based position in its file
    source: str           # the file it came from (absolute path)
    raw: dict             # the record exactly as in the file
    messages: list[dict]  # normalised conversation, see the module docstring


def load_files(paths, data_format: str = "auto") -> list[Record]:
    """Load several dataset files and concatenate their records (each file detected on its own)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError("no data files given", "data_files",
                        "Name at least one file, e.g. --set data_files=data/huanhuan_sample.json.")
    return [record for path in paths for record in load_records(path, data_format)]


def load_records(path, data_format: str = "auto") -> list[Record]:
    """Read one JSON or JSONL dataset file, validate every record and normalise it to messages."""
    if data_format not in ("auto", *FORMATS):
        raise DataError(f"unknown data_format '{data_format}'", "data_format",
                        "Use 'auto', 'alpaca' or 'messages'.")
    shown = str(path)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():  # relative to where the user runs the command
        resolved = Path.cwd() / resolved
    records, expected, first = [], None if data_format == "auto" else data_format, None
    for number, line, raw in parse_records(resolved, shown):
        place = Place(shown, number, line)
        found = _detect(raw, place)
        if expected is None:
            expected, first = found, number
        elif found != expected:
            raise place.error(*_format_mismatch(found, expected, first))
        messages = _alpaca_messages(raw, place) if found == "alpaca" else _chat_messages(raw, place)
        records.append(Record(number - 1, str(resolved), raw, messages))
    return records


def detect_format(raw_record: dict) -> str:
    """'alpaca' or 'messages' for one record as read from a file; DataError for anything else."""
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
        raise DataError(f"val_size {val_size} is not a fraction below 1", "val_size",
                        "Use a value such as 0.1 (10% for validation), or 0 for none.")
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
def _detect(raw, place: Place) -> str:
    if not isinstance(raw, dict):
        raise place.error(f"the record is {kind_of(raw)}, not a JSON object",
                          fix="Each record must be a JSON object in braces. " + ALPACA_FIX)
    alpaca, chat = bool(ALPACA_KEYS & raw.keys()), any(key in raw for key in CHAT_KEYS)
    if alpaca != chat:
        return "alpaca" if alpaca else "messages"
    keys = ", ".join(repr(k) for k in raw) or "none"
    what = ("the record mixes alpaca fields with a conversation" if alpaca
            else "unknown record format: neither alpaca nor chat messages")
    raise place.error(f"{what} (keys found: {keys})",
                      fix="Use alpaca ('instruction', 'input', 'output') or chat ('messages' or "
                          "'conversations'); see data/README.md for examples.")


def _format_mismatch(found: str, expected: str, first: int | None) -> tuple[str, None, str]:
    if first is None:  # the user named the format
        return (f"this record is in {found} format but data_format is '{expected}'", None,
                f"Set data_format to 'auto' or '{found}', or convert the file.")
    return (f"mixed formats: this record is in {found} format but record {first} (the first) is {expected}",
            None,
            "Keep one format per file: convert these records or move them to a file of their own.")


# --- alpaca ----------------------------------------------------------------------------------------
def _alpaca_messages(raw: dict, place: Place) -> list[dict]:
    instruction = _text(raw, "instruction", place, ALPACA_FIX)
    user_input = _text(raw, "input", place, ALPACA_FIX, required=False)
    output = _text(raw, "output", place, ALPACA_FIX)
    system = _text(raw, "system", place, ALPACA_FIX, required=False)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += _history_messages(raw.get("history"), place)
    prompt = f"{instruction}\n{user_input}" if user_input.strip() else instruction
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _history_messages(history, place: Place) -> list[dict]:
    fix = 'Write the earlier turns as [[user, assistant], ...], e.g. [["你好", "皇上万福。"]].'
    if history is None:
        return []
    if not isinstance(history, list):
        raise place.error(f"history must be a list of [user, assistant] pairs, not {kind_of(history)}",
                          "history", fix)
    messages = []
    for i, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            size = f" of {len(pair)} items" if isinstance(pair, list) else ""
            raise place.error(f"history entry is {kind_of(pair)}{size}, not a [user, assistant] pair",
                              f"history[{i}]", fix)
        for j, role in enumerate(("user", "assistant")):
            content = _check_text(pair[j], f"history[{i}][{j}]", place, fix, allow_empty=False)
            messages.append({"role": role, "content": content})
    return messages


# --- chat messages ---------------------------------------------------------------------------------
def _chat_messages(raw: dict, place: Place) -> list[dict]:
    key = "messages" if "messages" in raw else "conversations"
    turns = raw[key]
    if not isinstance(turns, list):
        raise place.error(f"must be a list of messages, not {kind_of(turns)}", key, CHAT_FIX)
    if not turns:
        raise place.error("the conversation is empty", key, "Add a user message and the assistant's answer.")
    messages, expected = [], "user"
    for i, turn in enumerate(turns):
        field = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise place.error(f"a message must be a JSON object, not {kind_of(turn)}", field, CHAT_FIX)
        role_key = "from" if "from" in turn and "role" not in turn else "role"
        content_key = "value" if "value" in turn and "content" not in turn else "content"
        name = _text(turn, role_key, place, CHAT_FIX, prefix=field)
        role = ROLES.get(name.strip().lower())
        if role is None:
            raise place.error(f"unknown role '{name}'", f"{field}.{role_key}",
                              "Roles are system, user (or human) and assistant (or gpt).")
        content = _text(turn, content_key, place, CHAT_FIX, prefix=field, allow_empty=role == "system")
        if role == "system":
            if i:
                raise place.error("a system message may only come first", f"{field}.{role_key}",
                                  "Move it to the start of the conversation or merge it into the first one.")
            if content.strip():  # an empty system prompt means "none"
                messages.append({"role": role, "content": content})
            continue
        if role != expected:
            raise place.error(f"roles out of order: '{name}' where {_AN[expected]} turn was expected",
                              f"{field}.{role_key}",
                              "After an optional system message, turns must alternate user, assistant, "
                              "user, assistant, ... starting with the user.")
        messages.append({"role": role, "content": content})
        expected = "assistant" if role == "user" else "user"
    if expected != "user":
        last = f"{key}[{len(turns) - 1}]"
        raise place.error("the conversation does not end with an assistant message", last,
                          "End each conversation with the assistant's answer: that is what is trained.")
    return messages


# --- field checks ----------------------------------------------------------------------------------
def _text(raw: dict, key: str, place: Place, fix: str, *, required: bool = True, prefix: str = "",
          allow_empty: bool | None = None) -> str:
    """The string field `key` of `raw`: optional fields may be absent, null or empty."""
    field = f"{prefix}.{key}" if prefix else key
    value = raw.get(key)
    if key not in raw or (value is None and not required):
        if required:
            raise place.error("is missing", field, fix)
        return ""
    if allow_empty is None:
        allow_empty = not required
    return _check_text(value, field, place, fix, allow_empty=allow_empty)


def _check_text(value, field: str, place: Place, fix: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise place.error(f"must be a string, not {kind_of(value)}", field,
                          "Put the text in double quotes. " + fix)
    if not allow_empty and not value.strip():
        raise place.error("is empty", field, "Write the text, or delete the record.")
    return value


__all__ = ["DatasetReport", "Record", "conversation_key", "dataset_report", "dedupe", "detect_format",
           "load_files", "load_records", "split", "to_dataset"]
