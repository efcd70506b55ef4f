"""Blind A/B votes: counted right whatever the shuffle, kept whole in the run folder, one vote a prompt."""

from __future__ import annotations

import json
import random

import pytest

from lora_studio import ab


def simulate(rounds: ab.BlindRounds, run_dir, count: int, taste: random.Random) -> dict:
    """A reader who prefers the tuned answer, the base one or neither, and clicks where it is shown.

    They see only the two panes' texts: the tuned answers start with "T", the base ones with "B".
    Returns how often each was preferred, the tally a correct count must give.
    """
    expected = {"tuned": 0, "base": 0, "tie": 0}
    for number in range(count):
        rounds.start(f"question {number}")
        rounds.finish(base=f"B{number}", tuned=f"T{number}")
        left, right = rounds.current.answers
        wants = taste.choice(("tuned", "base", "tie"))
        expected[wants] += 1
        if wants == "tie":
            choice = "tie"
        else:
            letter = "T" if wants == "tuned" else "B"
            choice = "left" if left.startswith(letter) else "right"
            assert (left if choice == "left" else right).startswith(letter)
        rounds.vote(choice, run_dir, adapter="checkpoint-2")
    return expected


def test_votes_are_counted_right_whatever_the_shuffle(tmp_path):
    global_state = random.getstate()
    for seed in range(20):
        run_dir = tmp_path / f"run-{seed}"
        run_dir.mkdir()
        rounds = ab.BlindRounds(seed=seed)
        expected = simulate(rounds, run_dir, 50, random.Random(1000 + seed))
        assert ab.tally(run_dir) == ab.Tally(tuned=expected["tuned"], base=expected["base"], ties=expected["tie"],
                                             total=50)
        votes = ab.read_votes(run_dir)
        sides = {vote["left"] for vote in votes}
        assert sides == {"tuned", "base"}  # the shuffle really put the tuned answer on both sides
        for number, vote in enumerate(votes):  # each line says what was where and keeps both answers
            assert vote["prompt"] == f"question {number}"
            assert vote["answers"] == {"tuned": f"T{number}", "base": f"B{number}"}
            assert vote["winner"] == ab.winner(vote["left"] == "tuned", vote["choice"])
    assert random.getstate() == global_state  # the shuffle never touched the global RNG


def test_every_click_on_each_side_means_what_it_showed():
    assert ab.winner(True, "left") == "tuned" and ab.winner(True, "right") == "base"
    assert ab.winner(False, "left") == "base" and ab.winner(False, "right") == "tuned"
    assert ab.winner(True, "tie") == ab.winner(False, "tie") == "tie"
    with pytest.raises(ValueError):
        ab.winner(True, "middle")


def test_the_shuffle_is_fair_and_each_session_has_its_own():
    rounds = ab.BlindRounds(seed=7)
    sides = [rounds.start("q").left_is_tuned for _ in range(2000)]
    assert 900 < sum(sides) < 1100
    one, two = ab.BlindRounds(), ab.BlindRounds()  # seeded from the system's entropy
    assert [one.start("q").left_is_tuned for _ in range(64)] != [two.start("q").left_is_tuned for _ in range(64)]
    again = ab.BlindRounds(seed=7)
    assert [again.start("q").left_is_tuned for _ in range(2000)] == sides


def test_the_votes_file_round_trips(tmp_path):
    written = [ab.record_vote(tmp_path, "你是谁？", True, "left", ("臣妾甄嬛", "我是一个模型"), adapter="adapter"),
               ab.record_vote(tmp_path, "你好", False, "left", ("你好", "皇上万福"), adapter="checkpoint-1"),
               ab.record_vote(tmp_path, "你好", False, "tie", ("a", "b"), adapter="adapter")]
    assert ab.read_votes(tmp_path) == written
    lines = (tmp_path / ab.VOTES_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["answers"] == {"tuned": "皇上万福", "base": "你好"}
    assert "臣妾甄嬛" in lines[0]  # readable, not \u-escaped
    assert ab.tally(tmp_path) == ab.Tally(tuned=1, base=1, ties=1, total=3)
    assert ab.tally(tmp_path, adapter="adapter") == ab.Tally(tuned=1, base=0, ties=1, total=2)
    assert ab.tally(tmp_path / "no-such-run") == ab.Tally()


def test_a_line_torn_by_a_crash_is_ignored_and_the_next_vote_stays_whole(tmp_path):
    ab.record_vote(tmp_path, "q1", True, "left", ("t", "b"))
    ab.record_vote(tmp_path, "q2", True, "right", ("t", "b"))
    path = tmp_path / ab.VOTES_FILE
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:25])  # killed in the middle of a third line
    assert ab.tally(tmp_path) == ab.Tally(tuned=1, base=1, ties=0, total=2)
    ab.record_vote(tmp_path, "q4", False, "right", ("b", "t"))
    assert ab.tally(tmp_path) == ab.Tally(tuned=2, base=1, ties=0, total=3)
    assert [v["prompt"] for v in ab.read_votes(tmp_path)] == ["q1", "q2", "q4"]
    path.write_bytes(path.read_bytes() + b"not json\n" + "\ufffd{\n".encode())  # foreign lines too
    assert ab.tally(tmp_path).total == 3


def test_one_vote_per_prompt_only_on_the_latest_and_only_when_both_answers_are_done(tmp_path):
    rounds = ab.BlindRounds(seed=3)
    with pytest.raises(ab.ABError) as refused:
        rounds.vote("left", tmp_path)
    assert "no answers to vote on yet" in refused.value.render("en")
    rounds.start("你是谁？")
    with pytest.raises(ab.ABError) as refused:
        rounds.vote("left", tmp_path)  # still streaming
    assert "not finished" in refused.value.render("en") and "回答完" in refused.value.render("zh")
    rounds.finish(base="b", tuned="t")
    round_, kept = rounds.vote("tie", tmp_path)
    assert kept and round_.winner == "tie"
    with pytest.raises(ab.ABError) as refused:
        rounds.vote("left", tmp_path)
    assert refused.value.render("zh") == "盲评：「你是谁？」已经投过票了。每个问题只能投一票，请发送下一个问题。"
    assert ab.tally(tmp_path).total == 1
    rounds.start("你好")  # a new prompt: the earlier one cannot be voted on any more
    rounds.finish(base="b", tuned="t")
    rounds.vote("left", tmp_path)
    assert [v["prompt"] for v in ab.read_votes(tmp_path)] == ["你是谁？", "你好"]


def test_without_a_run_folder_the_sides_are_revealed_but_nothing_is_kept(tmp_path):
    rounds = ab.BlindRounds(seed=1)
    rounds.start("q")
    rounds.finish(base="b", tuned="t")
    round_, kept = rounds.vote("left", None)
    assert not kept and round_.winner == ("tuned" if round_.left_is_tuned else "base")
    assert list(tmp_path.iterdir()) == []
    assert ab.run_folder_of(tmp_path) is None
    (tmp_path / "run" / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("run_name: run\n", encoding="utf-8")
    assert ab.run_folder_of(tmp_path / "run" / "checkpoints" / "checkpoint-3") == tmp_path / "run"
