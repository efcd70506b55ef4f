"""What is in a dataset: duplicates, conflicting answers, whitespace and length statistics.

Used by `studio.py data check` and the studio's dataset doctor. Works on loaded records (see
`data.Record`); lengths come from a caller-supplied `token_length` (the record rendered with the chat
template and tokenised) or, without one, from the characters of the messages.

Definitions (checked against the real Zhen Huan set: 112 and 50):
- an exact duplicate is a record whose whole conversation equals an earlier record's; the first copy
  is not counted, so 50 identical records add 49;
- a conflicting prompt is a distinct prompt (everything before the final answer: system, history and
  the last user message) that appears with two or more different final answers.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

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

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        """A readable summary for the terminal."""
        lines = [f"Records: {self.records}"]
        lines.append(f"Exact duplicates: {_records(self.exact_duplicates)}"
                     + (f" in {len(self.duplicate_groups)} groups (dedupe=true drops them before training)"
                        if self.duplicate_groups else ""))
        for group in self.duplicate_groups[:SHOWN]:
            lines.append(f"  {self._name(group.source, group.first)} x{group.count}: {_clip(group.prompt)}")
        lines.append(f"Conflicting prompts: {self.conflicting_prompts}"
                     + (" (the same prompt with different answers)" if self.conflicts else ""))
        for conflict in self.conflicts[:SHOWN]:
            numbers = ", ".join(str(i + 1) for i in conflict.records[:SHOWN])
            more = ", ..." if len(conflict.records) > SHOWN else ""
            lines.append(f"  {_clip(conflict.prompt)}: {conflict.answers} answers "
                         f"(records {numbers}{more})")
        lines.append(f"Empty fields: {self.empty_fields}")
        ws = ", ".join(self._name("", i) for i in self.whitespace_records[:SHOWN])
        lines.append(f"Leading/trailing whitespace: {_records(self.whitespace)}" + (f" ({ws})" if ws else ""))
        lines += self._length_lines()
        return "\n".join(lines)

    def _length_lines(self) -> list[str]:
        if self.lengths is None:
            return ["Lengths: no records"]
        s = self.lengths
        unit = ("tokens (chat template applied)" if self.length_unit == "tokens"
                else "characters (pass --model to count tokens)")
        lines = [f"Lengths in {unit}: min {s.min}, median {s.median:g}, p95 {s.p95}, max {s.max}, "
                 f"mean {s.mean:.1f}"]
        peak = max(count for _, _, count in s.histogram) or 1
        label_width = len(f"{s.histogram[-1][0]}-{s.histogram[-1][1]}")
        for start, end, count in s.histogram:
            bar = "#" * math.ceil(30 * count / peak) if count else ""
            lines.append(f"  {f'{start}-{end}':>{label_width}} {bar} {count}")
        if self.cutoff_len is not None:
            note = (" (truncated in training)" if self.length_unit == "tokens"
                    else " (counted in characters: tokens may differ)")
            lines.append(f"Over cutoff_len {self.cutoff_len}: {_records(self.over_cutoff)}"
                         + (note if self.over_cutoff else ""))
        return lines

    def _name(self, source: str, index: int) -> str:
        # record numbers are 1-based for people; name the file only when several were loaded
        prefix = f"{source} " if source and len(self.sources) > 1 else ""
        return f"{prefix}record {index + 1}"


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
    )


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


def _records(count: int) -> str:
    return f"{count} record" + ("" if count == 1 else "s")


def _clip(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return f"「{text}」" if len(text) <= limit else f"「{text[:limit]}…」"
