"""Character scripts: a role card with dialogue lines, turned into one multi-turn conversation.

A script record names the role the model plays and lists who says what, in order:

    {"role_name": "甄嬛", "role_info": "你是甄嬛……", "dialog": ["皇上：你来了。", "甄嬛：臣妾给皇上请安。"]}

`dialog` is a list of lines, or one text with a line per line (how a CSV cell holds it; blank lines
are skipped, and `dialog[i]` then counts the cell's lines from 0). A line is the speaker's name, a
colon (full-width "：" or ASCII ":") and the words. The record becomes:

- system: `role_info` as written, when it is not empty (otherwise the run's system prompt applies);
- assistant: the role's lines (`role_name`, spelled exactly as in the lines), without the name;
- user: everything else. Speaker names stay in the user's text ("华妃：……") unless the user side is
  one voice, a single other speaker: then the name is dropped. Consecutive lines of one side become
  one turn, joined by newlines.

A line with no speaker (no colon near its start, such as "（众人退下）") is narration: it goes to the
user side as written and counts as a voice of its own, so names stay when narration is present. A
stage direction after a name ("甄嬛（低声）：……") belongs to that speaker and stays in the words.

A conversation must start with the user and end with the assistant: the role's lines before anyone
else has spoken, and the last lines nobody answers, are left out; the record keeps their positions
(`Script.left_out`) and the dataset doctor counts them. A role that never speaks, or only speaks
before everyone else, is an error naming the record and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .data_parse import Place, check_text, kind_of, text_field
from .i18n import Msg, msg

SCRIPT_KEYS = ("role_name", "dialog")
SEPARATORS = ("：", ":")
NAME_LIMIT = 20  # longer text before a colon is a sentence ("他说道：……"), not a speaker's name
# a name holds no sentence punctuation or quotes; a trailing （direction） or (direction) is allowed
_NAME = re.compile(r"(?P<name>[^，。！？；、,!?;\"“”「」（）()\[\]]+?)\s*(?P<direction>[（(][^）)]*[）)])?")
SCRIPT_EXAMPLE = '{"role_name": "甄嬛", "role_info": "...", "dialog": ["皇上：你来了。", "甄嬛：臣妾给皇上请安。"]}'


@dataclass(frozen=True)
class Line:
    index: int           # position in the dialog (list item, or line of the text)
    speaker: str | None  # None: narration
    words: str           # what is said, the speaker's name and the colon taken off
    text: str            # the line as written, trimmed


@dataclass(frozen=True)
class Script:
    messages: list[dict]
    speakers: int               # distinct named speakers in the dialog, the role included
    left_out: tuple[int, ...]   # dialog positions not in the conversation (see the module docstring)


def script_fix() -> Msg:
    return msg("data.script_fix", example=SCRIPT_EXAMPLE)


def is_script(raw: dict) -> bool:
    return any(key in raw for key in SCRIPT_KEYS)


def script_messages(raw: dict, place: Place) -> Script:
    """The conversation of one script record (see the module docstring), or a DataError naming the line."""
    fix = script_fix()
    role = text_field(raw, "role_name", place, fix).strip()
    info = text_field(raw, "role_info", place, fix, required=False)
    lines = dialog_lines(raw, place)
    sides = ["assistant" if line.speaker == role else "user" for line in lines]
    if "assistant" not in sides:
        speakers = ", ".join(dict.fromkeys(line.speaker for line in lines if line.speaker)) or msg("data.no_keys")
        raise place.error(msg("data.role_silent", role=role, speakers=speakers), "role_name",
                          msg("data.role_silent_fix", example=f"{role}{SEPARATORS[0]}……"))
    first = sides.index("user") if "user" in sides else len(sides)
    last = len(sides) - sides[::-1].index("assistant")  # just past the role's last line
    if first >= last:
        raise place.error(msg("data.role_never_answers", role=role), "dialog", msg("data.role_never_answers_fix"))
    kept = lines[first:last]
    voices = {line.speaker for line in kept if line.speaker != role}
    named = len(voices) > 1
    messages = [{"role": "system", "content": info}] if info.strip() else []
    for line in kept:
        side = "assistant" if line.speaker == role else "user"
        content = line.text if side == "user" and (named or line.speaker is None) else line.words
        if messages and messages[-1]["role"] == side:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": side, "content": content})
    left_out = tuple(line.index for line in lines[:first] + lines[last:])
    return Script(messages, len({line.speaker for line in lines if line.speaker}), left_out)


def dialog_lines(raw: dict, place: Place) -> list[Line]:
    """The dialog's lines, each split into speaker and words; DataError for a line that cannot be read."""
    fix = script_fix()
    if "dialog" not in raw:
        raise place.error(msg("data.missing"), "dialog", fix)
    dialog = raw["dialog"]
    if isinstance(dialog, str):
        items = [(i, text) for i, text in enumerate(dialog.split("\n")) if text.strip()]
    elif isinstance(dialog, list):
        items = [(i, check_text(text, f"dialog[{i}]", place, fix, allow_empty=False)) for i, text in enumerate(dialog)]
    else:
        raise place.error(msg("data.dialog_not_list", kind=kind_of(dialog)), "dialog", fix)
    if not items:
        raise place.error(msg("data.dialog_empty"), "dialog", msg("data.dialog_empty_fix", example=SCRIPT_EXAMPLE))
    return [split_line(index, text, place) for index, text in items]


def split_line(index: int, text: str, place: Place) -> Line:
    """One dialog line as speaker and words: 'name：words', or narration when no name comes first."""
    text = text.strip()
    cuts = [text.find(sep) for sep in SEPARATORS if sep in text]
    if not cuts:
        return Line(index, None, text, text)
    cut = min(cuts)
    head, words = text[:cut].strip(), text[cut + 1:].strip()
    if not head:
        raise place.error(msg("data.line_no_name"), f"dialog[{index}]", msg("data.line_no_name_fix"))
    found = _NAME.fullmatch(head)
    if len(head) > NAME_LIMIT or found is None:
        return Line(index, None, text, text)
    if not words:
        raise place.error(msg("data.line_no_words", name=head), f"dialog[{index}]", msg("data.line_no_words_fix"))
    direction = found.group("direction")
    return Line(index, found.group("name").strip(), f"{direction}{words}" if direction else words, text)

