"""The held-out metrics on known pairs of texts equal values worked out by hand (lora_studio/metrics.py)."""

from __future__ import annotations

import math

import pytest

from lora_studio import metrics as m


# --- ROUGE-L on characters -------------------------------------------------------------------------
def test_rouge_l_of_two_four_character_answers_sharing_two_characters_is_one_half():
    # LCS("臣妾甄嬛", "我是甄嬛") = "甄嬛": P = R = 2/4, F = 2PR/(P+R) = 0.5
    assert m.lcs_length("臣妾甄嬛", "我是甄嬛") == 2
    assert m.rouge_l("臣妾甄嬛", "我是甄嬛") == pytest.approx(0.5)


def test_rouge_l_weighs_precision_and_recall_alike():
    # LCS("臣妾甄嬛", "臣妾是甄嬛") = 4: P = 4/4, R = 4/5, F = 2 * 0.8 / 1.8 = 8/9
    assert m.rouge_l("臣妾甄嬛", "臣妾是甄嬛") == pytest.approx(8 / 9)
    assert m.rouge_l("臣妾是甄嬛", "臣妾甄嬛") == pytest.approx(8 / 9)
    # order matters: a subsequence, not a bag of characters ("嬛甄" shares only one in order)
    assert m.rouge_l("嬛甄", "甄嬛") == pytest.approx(0.5)


def test_rouge_l_ignores_whitespace_and_handles_empty_answers():
    assert m.rouge_l("臣妾 甄嬛\n", "臣妾甄嬛") == 1.0
    assert m.rouge_l("", "臣妾甄嬛") == 0.0 and m.rouge_l("臣妾", "  ") == 0.0
    assert m.rouge_l("", "") == 1.0
    assert m.rouge_l("abc", "xyz") == 0.0


def test_the_longest_common_subsequence_of_a_textbook_pair():
    assert m.lcs_length("ABCBDAB", "BDCABA") == 4
    assert m.lcs_length("", "abc") == 0


# --- chrF ----------------------------------------------------------------------------------------------
def test_chrf_is_sacrebleus_own_and_sane():
    import sacrebleu

    candidate, reference = "臣妾甄嬛，家父是大理寺少卿。", "臣妾甄嬛，家父甄远道是大理寺少卿。"
    score = m.chrf(candidate, reference)
    assert score == sacrebleu.sentence_chrf(candidate, [reference]).score
    assert 0 < score < 100
    assert m.chrf(reference, reference) == pytest.approx(100.0)
    assert m.chrf("天朗气清", "臣妾甄嬛") == 0.0
    assert m.chrf("臣妾甄嬛", "臣妾甄嬛，家父甄远道") > m.chrf("臣妾", "臣妾甄嬛，家父甄远道")


def test_corpus_chrf_is_sacrebleus_corpus_score():
    import sacrebleu

    candidates, references = ["臣妾甄嬛", "皇上万福"], ["臣妾甄嬛。", "皇上万福金安"]
    assert m.corpus_chrf(candidates, references) == sacrebleu.corpus_chrf(candidates, [references]).score
    assert m.corpus_chrf([], []) == 0.0


# --- perplexity ----------------------------------------------------------------------------------
def test_perplexity_counts_only_labelled_tokens_one_position_ahead():
    import torch

    # vocabulary of 3; logits that are log-probabilities. Position t scores the token at t + 1.
    logits = torch.tensor([[[50.0, 0.0, 0.0],                  # scores token 1 (label -100: skipped)
                            [math.log(0.25), math.log(0.25), math.log(0.5)],  # scores token 2: label 2, p = 0.5
                            [math.log(0.2), math.log(0.3), math.log(0.5)],    # scores token 3: label 0, p = 0.2
                            [0.0, 99.0, 0.0]]])                 # scores nothing: the last position
    labels = torch.tensor([[-100, -100, 2, 0]])
    nll, count = m.token_nll(logits, labels)
    assert count == 2
    assert nll == pytest.approx(-math.log(0.5) - math.log(0.2))  # = ln 10
    assert m.perplexity(nll, count) == pytest.approx(math.sqrt(10))


def test_perplexity_of_a_set_weighs_every_token_the_same():
    # one example of 1 token at p = 1/2 and one of 3 tokens at p = 1/8 each: exp((ln 2 + 3 ln 8) / 4) = 2^(10/4)
    nll = math.log(2) + 3 * math.log(8)
    assert m.perplexity(nll, 4) == pytest.approx(2 ** 2.5)
    assert m.perplexity(0.0, 0) is None


def test_no_labelled_token_gives_no_count():
    import torch

    assert m.token_nll(torch.zeros(1, 3, 5), torch.full((1, 3), -100)) == (0.0, 0)


# --- persona, length, variety ---------------------------------------------------------------------
MARKERS, LEAKAGE = ["臣妾", "本宫"], ["AI", "语言模型", "assistant"]


def test_persona_share_counts_answers_with_a_marker_and_no_leakage_word():
    answers = ["臣妾甄嬛。",            # in character
               "本宫是一个AI助手",       # a marker, but it leaks
               "我是一个语言模型",       # leaks, no marker
               "你好",                   # no marker
               "臣妾 said it again"]    # "ai" inside "said"/"again" is no word "AI": in character
    assert [m.in_character(a, MARKERS, LEAKAGE) for a in answers] == [True, False, False, False, True]
    assert m.persona_share(answers, MARKERS, LEAKAGE) == pytest.approx(2 / 5)
    assert m.persona_share([], MARKERS, LEAKAGE) == 0.0


def test_ascii_words_match_whole_and_in_any_case_other_words_as_substrings():
    assert m.contains_word("I am an ai.", "AI") and m.contains_word("As an Assistant,", "assistant")
    assert not m.contains_word("maintain", "AI")
    assert m.contains_word("本宫乃熹贵妃", "本宫") and not m.contains_word("臣妾", "  ")


def test_mean_length_counts_characters_without_whitespace():
    assert m.mean_length(["臣妾 甄嬛", "好"]) == pytest.approx(2.5)
    assert m.mean_length([]) == 0.0


def test_distinct_2_is_distinct_bigrams_over_all_bigrams_within_answers():
    # 臣妾臣妾: bigrams 臣妾, 妾臣, 臣妾 -> 2 distinct of 3
    assert m.distinct_2(["臣妾臣妾"]) == pytest.approx(2 / 3)
    # two equal answers: 2 bigrams, 1 distinct; bigrams never span two answers
    assert m.distinct_2(["甄嬛", "甄 嬛"]) == pytest.approx(1 / 2)
    assert m.distinct_2(["甄", "嬛"]) == 0.0
    assert m.distinct_2(["皇上万福", "臣妾告退"]) == 1.0


def test_changed_share_and_ranked_samples():
    assert m.changed_share(["十二个月。", "一百度"], ["十二个月。 ", "臣妾不知"]) == pytest.approx(0.5)
    assert m.changed_share([], []) == 0.0
    samples = [{"id": i, "rouge_l": score} for i, score in enumerate([0.2, 0.9, 0.0, 0.5, 0.9])]
    best, worst = m.ranked_samples(samples, 2)
    assert [s["id"] for s in best] == [1, 4] and [s["id"] for s in worst] == [2, 0]
