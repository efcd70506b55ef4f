"""What is in a dataset: duplicates, conflicting answers, whitespace and length statistics.

Used by `studio.py data check` and the studio's dataset doctor. Works on loaded records (see
`data.Record`); lengths come from a caller-supplied `token_length` (the record rendered with the chat
template and tokenised) or, without one, from the characters of the messages.

Definitions (checked against the real Zhen Huan set: 112 and 50):
- an exact duplicate is a record whose whole conversation equals an earlier record's; the first copy
  is not counted, so 50 identical records add 49;
- a conflicting prompt is a distinct prompt (everything before the final answer: system, history and
  the last user message) that appears with two or more different final answers;
- a turn is one user or assistant message (a question and its answer are 2 turns); turns are
  reported when some record has more than one exchange, or scripts were read. A script's speakers
  are the distinct names in its dialog, the role included, and its lines left out are those the
  conversation could not use (see data_script).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

from .config import Setting
from .i18n import Msg, msg

SHOWN = 5  # examples per finding in the text report


@dataclass
class DuplicateGroup:
    first: int      # 0-based index of the first copy in its file
    count: int      # copies in the group, the first included
    prompt: str     # the last user message, for display
    source: str = ""


@dataclass
class Conflict:
    prompt: str         # the last user message, for display
    answers: int        # how many different answers it has
    records: list[int]  # 0-based indices of every record with this prompt
    source: str = ""


@dataclass
class LengthStats:
    min: int
    median: float
    p95: int
    max: int
    mean: float
    histogram: list[tuple[int, int, int]]  # (first length, last length, records), inclusive bins


@dataclass
class TurnStats:
    min: int
    median: float
    max: int


@dataclass
class DatasetReport:
    records: int
    exact_duplicates: int
    duplicate_groups: list[DuplicateGroup]
    conflicting_prompts: int
    conflicts: list[Conflict]
    empty_fields: int                 # messages whose content is empty or only whitespace
    whitespace: int                   # records with leading or trailing whitespace in a message
    whitespace_records: list[int]     # their 0-based indices (the first few)
    length_unit: str                  # "tokens" or "characters"
    lengths: LengthStats | None       # None for an empty dataset
    over_cutoff: int | None = None    # records longer than cutoff_len (None without a cutoff)
    cutoff_len: int | None = None
    sources: list[str] = field(default_factory=list)
    turns: TurnStats | None = None    # user and assistant messages per record (None for no records)
    scripts: int = 0                  # records read from character scripts
    speakers: list[tuple[int, int]] = field(default_factory=list)  # (speakers, scripts with that many)
    left_out: int = 0                 # script lines not in any conversation
    left_out_scripts: int = 0         # scripts with such lines
    left_out_records: list[int] = field(default_factory=list)  # 0-based indices of their records (first few)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self, lang: str) -> str:
        """A readable summary for the terminal, in `lang`."""
        return "\n".join(line.render(lang) for line in self.lines())

    def lines(self) -> list[Msg]:
        """The summary, one message a line (the CLI renders them in the user's language)."""
        lines = [msg("data.report_records", count=self.records)]
        records = _records(self.exact_duplicates)
        lines.append(msg("data.report_duplicate_groups", records=records, groups=len(self.duplicate_groups),
                         key=Setting.dedupe) if self.duplicate_groups
                     else msg("data.report_duplicates", records=records))
        for group in self.duplicate_groups[:SHOWN]:
            lines.append(msg("data.report_group", name=self._name(group.source, group.first), count=group.count,
                             prompt=_clip(group.prompt)))
        lines.append(msg("data.report_conflicts_found" if self.conflicts else "data.report_conflicts",
                         count=self.conflicting_prompts))
        for conflict in self.conflicts[:SHOWN]:
            numbers = ", ".join(str(i + 1) for i in conflict.records[:SHOWN])
            more = ", ..." if len(conflict.records) > SHOWN else ""
            lines.append(msg("data.report_conflict", prompt=_clip(conflict.prompt), answers=conflict.answers,
                             numbers=numbers + more))
        lines.append(msg("data.report_empty", count=self.empty_fields))
        spaced = [self._name("", i) for i in self.whitespace_records[:SHOWN]]
        lines.append(msg("data.report_whitespace_where", records=_records(self.whitespace), where=spaced) if spaced
                     else msg("data.report_whitespace", records=_records(self.whitespace)))
        return lines + self._turn_lines() + self._length_lines()

    def shows_turns(self) -> bool:
        """Whether turns are worth a line: not when every record is one question and its answer."""
        return self.turns is not None and (self.turns.max > 2 or self.scripts > 0)

    def _turn_lines(self) -> list[Msg]:
        if not self.shows_turns():
            return []
        t = self.turns
        lines = [msg("data.report_turns", min=t.min, median=t.median, max=t.max)]
        if self.scripts:
            lines.append(msg("data.report_speakers", counts=self.speaker_counts()))
            where = [self._name("", i) for i in self.left_out_records[:SHOWN]]
            lines.append(msg("data.report_left_out", lines=self.left_out, records=_records(self.left_out_scripts),
                             where=where) if self.left_out else msg("data.report_left_out_none"))
        return lines

    def speaker_counts(self) -> Msg | str:
        """'2 speakers in 3 records, 3 speakers in 1 record': fewest speakers first."""
        items = [msg("data.speakers_item", speakers=n, records=_records(count)) for n, count in self.speakers]
        joined = items[0] if items else ""
        for item in items[1:]:
            joined = msg("data.list_join", first=joined, rest=item)
        return joined

    def _length_lines(self) -> list[Msg]:
        if self.lengths is None:
            return [msg("data.report_no_lengths")]
        s = self.lengths
        tokens = self.length_unit == "tokens"
        lines = [msg("data.report_lengths", unit=msg("data.unit_tokens" if tokens else "data.unit_characters"),
                     min=s.min, median=s.median, p95=s.p95, max=s.max, mean=s.mean)]
        peak = max(count for _, _, count in s.histogram) or 1
        label_width = len(f"{s.histogram[-1][0]}-{s.histogram[-1][1]}")
        for start, end, count in s.histogram:
            bar = "#" * math.ceil(30 * count / peak) if count else ""
            lines.append(msg("data.report_bar", label=f"{f'{start}-{end}':>{label_width}}", bar=bar, count=count))
        if self.cutoff_len is not None:
            key = ("data.report_over_cutoff" if not self.over_cutoff
                   else "data.report_over_cutoff_tokens" if tokens else "data.report_over_cutoff_characters")
            lines.append(msg(key, key=Setting.cutoff_len, cutoff=self.cutoff_len,
                             records=_records(self.over_cutoff)))
        return lines

    def _name(self, source: str, index: int) -> Msg:
        # record numbers are 1-based for people; name the file only when several were loaded
        if source and len(self.sources) > 1:
            return msg("data.record_in_file", source=source, number=index + 1)
        return msg("data.record_name", number=index + 1)


def dataset_report(records, token_length: Callable | None = None,
                   cutoff_len: int | None = None) -> DatasetReport:
    """Everything `DatasetReport` holds, for a list of loaded records."""
    groups, conflicts = _duplicates(records), _conflicts(records)
    measure = token_length or _characters
    lengths = [measure(record) for record in records]
    spaced = [i for i, r in enumerate(records)
              if any(m["content"] != m["content"].strip() for m in r.messages)]
    return DatasetReport(
        records=len(records),
        exact_duplicates=sum(group.count - 1 for group in groups),
        duplicate_groups=groups,
        conflicting_prompts=len(conflicts),
        conflicts=conflicts,
        empty_fields=sum(1 for r in records for m in r.messages if not m["content"].strip()),
        whitespace=len(spaced),
        whitespace_records=[records[i].index for i in spaced[:20]],
        length_unit="tokens" if token_length else "characters",
        lengths=_length_stats(lengths) if lengths else None,
        over_cutoff=sum(n > cutoff_len for n in lengths) if cutoff_len is not None else None,
        cutoff_len=cutoff_len,
        sources=sorted({r.source for r in records}),
        **_script_counts(records),
    )


def turn_count(record) -> int:
    """User and assistant messages of a record (the system prompt is no turn)."""
    return sum(1 for m in record.messages if m["role"] != "system")


def _script_counts(records) -> dict:
    turns = sorted(turn_count(record) for record in records)
    scripts = [r for r in records if r.speakers is not None]
    speakers = defaultdict(int)
    for record in scripts:
        speakers[record.speakers] += 1
    return {"turns": TurnStats(turns[0], statistics.median(turns), turns[-1]) if turns else None,
            "scripts": len(scripts), "speakers": sorted(speakers.items()),
            "left_out": sum(len(r.left_out) for r in scripts),
            "left_out_scripts": sum(1 for r in scripts if r.left_out),
            "left_out_records": [r.index for r in scripts if r.left_out][:20]}


def _characters(record) -> int:
    return sum(len(m["content"]) for m in record.messages)


def _duplicates(records) -> list[DuplicateGroup]:
    positions = defaultdict(list)
    for i, record in enumerate(records):
        positions[conversation_key(record.messages)].append(i)
    groups = [DuplicateGroup(records[p[0]].index, len(p), _prompt(records[p[0]]), records[p[0]].source)
              for p in positions.values() if len(p) > 1]
    return sorted(groups, key=lambda g: -g.count)  # stable: equal counts stay in file order


def _conflicts(records) -> list[Conflict]:
    answers, members = defaultdict(set), defaultdict(list)
    for i, record in enumerate(records):
        prompt = conversation_key(record.messages[:-1])
        answers[prompt].add(record.messages[-1]["content"])
        members[prompt].append(i)
    found = [Conflict(_prompt(records[m[0]]), len(answers[key]), [records[i].index for i in m],
                      records[m[0]].source)
             for key, m in members.items() if len(answers[key]) > 1]
    return sorted(found, key=lambda c: -len(c.records))


def conversation_key(messages: list[dict]) -> tuple:
    """A hashable form of a conversation: two records are duplicates when their keys are equal."""
    return tuple((m["role"], m["content"]) for m in messages)


def _prompt(record) -> str:
    users = [m["content"] for m in record.messages if m["role"] == "user"]
    return users[-1] if users else ""


def _length_stats(lengths: list[int]) -> LengthStats:
    ordered = sorted(lengths)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank: a length that occurs
    return LengthStats(ordered[0], statistics.median(ordered), p95, ordered[-1],
                       statistics.fmean(ordered), _histogram(ordered))


def _histogram(ordered: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """About `bins` bins of a round width (1, 2, 5, 10, 20, 50, ...), aligned to that width."""
    low, high = ordered[0], ordered[-1]
    width, step = 1, 0
    while math.ceil((high - low + 1) / width) > bins:
        step += 1
        width = (1, 2, 5)[step % 3] * 10 ** (step // 3)
    start = low - low % width
    counts = defaultdict(int)
    for n in ordered:
        counts[(n - start) // width] += 1
    last = (high - start) // width
    return [(start + b * width, start + (b + 1) * width - 1, counts[b]) for b in range(last + 1)]


def _records(count: int) -> Msg:
    return msg("data.count_one" if count == 1 else "data.count_many", count=count)


def _clip(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return f"「{text}」" if len(text) <= limit else f"「{text[:limit]}…」"
