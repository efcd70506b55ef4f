"""Blind A/B votes: which answer is better, the base model's or the tuned one's, without knowing which is which.

For each prompt a page session shuffles the two answers onto a left (A) and a right (B) pane with its
own random generator (never the global RNG), the reader picks left, right or a tie, and the sides are
revealed. Each vote is one line of `ab_votes.jsonl` in the run folder the adapter belongs to:

    {"time": "2026-12-01T20:31:05+00:00", "prompt": "你是谁？", "left": "tuned", "choice": "right",
     "winner": "base", "answers": {"tuned": "...", "base": "..."}, "adapter": "checkpoint-2", "strength": 1.0}

`left` says what the left pane showed, `choice` what the reader clicked, `winner` what that means
("tuned", "base" or "tie"); `adapter` is the checkpoint's folder name and `strength` the adapter
strength the tuned answer had (chat.py), so votes on a weakened adapter can be told apart. A line is appended with one write and only whole lines are read back: a
line torn by a crash is skipped (and a later vote starts on a line of its own), so the tally is always
that of the votes written whole. `tally(run_dir)` counts them.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import StudioError
from .i18n import msg

VOTES_FILE = "ab_votes.jsonl"
CHOICES = ("left", "right", "tie")
WINNERS = ("tuned", "base", "tie")


class ABError(StudioError):
    """A vote that cannot be taken: no round to vote on, already voted, answers not finished."""


@dataclass(frozen=True)
class Tally:
    tuned: int = 0
    base: int = 0
    ties: int = 0
    total: int = 0


def winner(left_is_tuned: bool, choice: str) -> str:
    """What a click means: "tuned", "base" or "tie", whichever side the tuned answer was shown on."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, not {choice!r}")
    if choice == "tie":
        return "tie"
    return "tuned" if (choice == "left") == bool(left_is_tuned) else "base"


def run_folder_of(adapter_dir: Path | None) -> Path | None:
    """The run folder an adapter (or checkpoint) belongs to, where its votes are kept; None outside a run."""
    from .chat import run_config_file

    if adapter_dir is None:
        return None
    found = run_config_file(Path(adapter_dir))
    return found.parent if found is not None else None


def record_vote(run_dir: Path, prompt: str, left_is_tuned: bool, choice: str, answers: tuple[str, str],
                **details) -> dict:
    """Append one vote to run_dir/ab_votes.jsonl; `answers` are (left pane's, right pane's). Returns the line.

    `details` (adapter="checkpoint-2", strength=1.0) are written into the line as they are.
    """
    left, right = answers
    tuned, base = (left, right) if left_is_tuned else (right, left)
    vote = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "prompt": prompt,
            "left": "tuned" if left_is_tuned else "base", "choice": choice,
            "winner": winner(left_is_tuned, choice), "answers": {"tuned": tuned, "base": base}, **details}
    line = json.dumps(vote, ensure_ascii=False) + "\n"
    path = Path(run_dir) / VOTES_FILE
    if _ends_torn(path):
        line = "\n" + line  # end the torn line a crash left, so this vote stays a line of its own
    # one write with O_APPEND: two sessions voting at once each add a whole line
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, line.encode("utf-8"))
        os.fsync(handle)
    finally:
        os.close(handle)
    return vote


def _ends_torn(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except FileNotFoundError:
        return False


def read_votes(run_dir: Path) -> list[dict]:
    """Every whole vote of a run, oldest first; torn or foreign lines are skipped."""
    path = Path(run_dir) / VOTES_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    votes = []
    for line in lines:
        try:
            vote = json.loads(line)
        except ValueError:
            continue
        if isinstance(vote, dict) and vote.get("winner") in WINNERS:
            votes.append(vote)
    return votes


def tally(run_dir: Path, adapter: str | None = None) -> Tally:
    """The run's votes counted: tuned wins, base wins, ties; only `adapter`'s when given."""
    winners = [v["winner"] for v in read_votes(run_dir) if adapter is None or v.get("adapter") == adapter]
    return Tally(tuned=winners.count("tuned"), base=winners.count("base"), ties=winners.count("tie"),
                 total=len(winners))


@dataclass
class Round:
    """One prompt of a blind session: where the tuned answer is shown, its answers once both are done."""
    prompt: str
    left_is_tuned: bool
    number: int
    strength: float = 1.0                   # the adapter strength the tuned answer is given
    answers: tuple[str, str] | None = None  # (left, right), set when both answers are finished
    winner: str | None = None               # set once voted


class BlindRounds:
    """A page session's blind rounds. Only the latest prompt can be voted on, once.

    The shuffle comes from the session's own `random.Random`, seeded from the system's entropy (or
    `seed`, for tests), so sessions do not share a sequence and the global RNG is never touched.
    """

    def __init__(self, seed: int | None = None):
        self.random = random.Random(secrets.randbits(64) if seed is None else seed)
        self.current: Round | None = None
        self.count = 0

    def start(self, prompt: str, strength: float = 1.0) -> Round:
        """A new round for `prompt`: the sides are shuffled now, before either answer is shown."""
        self.count += 1
        self.current = Round(prompt=prompt, left_is_tuned=self.random.random() < 0.5, number=self.count,
                             strength=strength)
        return self.current

    def finish(self, base: str, tuned: str) -> None:
        """Both answers are complete: the round can be voted on."""
        if self.current is not None:
            self.current.answers = (tuned, base) if self.current.left_is_tuned else (base, tuned)

    def vote(self, choice: str, run_dir: Path | None, adapter: str = "") -> tuple[Round, bool]:
        """Vote on the latest round; (the round, whether the vote was kept in `run_dir`).

        Raises ABError when there is nothing to vote on, the answers are not finished or this prompt
        already has a vote. Without a run folder the sides are still revealed but nothing is kept.
        """
        round_ = self.current
        if round_ is None:
            raise ABError(msg("chat.ab_no_round"), msg("chat.ab_where"), msg("chat.ab_no_round_fix"))
        if round_.winner is not None:
            raise ABError(msg("chat.ab_voted_already", prompt=round_.prompt), msg("chat.ab_where"),
                          msg("chat.ab_voted_already_fix"))
        if round_.answers is None:
            raise ABError(msg("chat.ab_not_ready"), msg("chat.ab_where"), msg("chat.ab_not_ready_fix"))
        kept = run_dir is not None
        if kept:
            record_vote(run_dir, round_.prompt, round_.left_is_tuned, choice, round_.answers, adapter=adapter,
                        strength=round_.strength)
        round_.winner = winner(round_.left_is_tuned, choice)
        return round_, kept
