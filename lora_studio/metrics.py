"""Held-out metrics of a fine-tune, as pure functions of texts (and, for perplexity, of tensors).

Every text metric works on characters, so Chinese needs no word segmentation, and ignores
whitespace: "臣妾 甄嬛" and "臣妾甄嬛" are the same answer. `chars(text)` is that view of a text.

- `rouge_l(candidate, reference)`: character-level ROUGE-L F1. With L the length of the longest
  common subsequence of the two character sequences, precision P = L / len(candidate), recall
  R = L / len(reference), F = 2PR / (P + R) (beta = 1). 0.0 when either side is empty (1.0 when both
  are). "臣妾甄嬛" against "我是甄嬛": L = 2 ("甄嬛"), P = R = 2/4, F = 0.5.
- `chrf` / `corpus_chrf`: sacrebleu's chrF (character n-grams up to 6, beta 2, whitespace dropped),
  0-100, sentence-level and corpus-level.
- `token_nll` + `perplexity`: perplexity on the trained (assistant) tokens only. Positions whose
  label is -100 (templates.IGNORE_INDEX: prompts, system text) do not count. The perplexity of a
  set of examples is exp(total negative log-likelihood / number of labelled tokens): every token
  weighs the same, whichever example it is in.
- `in_character(answer, markers, leakage)`: the answer contains at least one persona marker and no
  leakage word. A word of ASCII letters and digits ("AI", "assistant") matches as a whole word,
  case-insensitively ("AI" is not found in "said"); any other word (臣妾, 语言模型) as a substring.
  `persona_share` is the share of answers in character.
- `mean_length`: mean number of characters (whitespace not counted) of the answers.
- `distinct_2`: distinct character bigrams / all character bigrams, counted inside each answer
  (never across two answers), over all answers together; 0.0 when there is no bigram.
- `changed_share(base, tuned)`: share of answer pairs that differ (after stripping whitespace at
  the ends): how much of a control set the fine-tune changed.
- `ranked_samples`: the best and the worst samples by ROUGE-L.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

IGNORE_INDEX = -100  # templates.IGNORE_INDEX (not imported: this module stays free of tokenizers)
ASCII_WORD = re.compile(r"[A-Za-z0-9_]+")


def chars(text: str) -> str:
    """The text without any whitespace: what every character metric here compares."""
    return "".join(text.split())


# --- overlap with a reference ------------------------------------------------------------------
def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two sequences (O(len(a) * len(b)), one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """Character-level ROUGE-L F1 of `candidate` against `reference`, 0-1 (see the module docstring)."""
    cand, ref = chars(candidate), chars(reference)
    if not cand or not ref:
        return 1.0 if cand == ref else 0.0
    common = lcs_length(cand, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def chrf(candidate: str, reference: str) -> float:
    """sacrebleu's sentence chrF, 0-100."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(candidate, [reference]).score)


def corpus_chrf(candidates: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus chrF over aligned candidates and references, 0-100 (0.0 for none)."""
    import sacrebleu

    if not candidates:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(candidates), [list(references)]).score)


# --- perplexity ----------------------------------------------------------------------------------
def token_nll(logits, labels) -> tuple[float, int]:
    """(sum of -log p(label), number of labelled tokens) of a causal LM's output.

    `logits` [batch, seq, vocab] at position t score the token at t + 1, so they are compared with
    `labels` [batch, seq] shifted by one; positions labelled -100 are skipped.
    """
    import torch

    shifted = logits[..., :-1, :].float()
    targets = labels[..., 1:]
    keep = targets != IGNORE_INDEX
    if not bool(keep.any()):
        return 0.0, 0
    log_probs = torch.log_softmax(shifted[keep], dim=-1)
    picked = log_probs.gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
    return float(-picked.sum()), int(keep.sum())


def perplexity(nll_sum: float, count: int) -> float | None:
    """exp(mean negative log-likelihood per labelled token); None when no token was labelled."""
    if count <= 0:
        return None
    return math.exp(nll_sum / count)


# --- persona and variety -------------------------------------------------------------------------
def contains_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text`: ASCII words as whole words, any case; other words as substrings."""
    word = word.strip()
    if not word:
        return False
    if ASCII_WORD.fullmatch(word):
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text, re.IGNORECASE) is not None
    return word in text


def in_character(answer: str, markers: Iterable[str], leakage: Iterable[str]) -> bool:
    """At least one persona marker and no leakage word in the answer."""
    return any(contains_word(answer, w) for w in markers) and not any(contains_word(answer, w) for w in leakage)


def persona_share(answers: Sequence[str], markers: Iterable[str], leakage: Iterable[str]) -> float:
    """Share of answers in character, 0-1 (0.0 for no answers)."""
    markers, leakage = list(markers), list(leakage)
    if not answers:
        return 0.0
    return sum(in_character(a, markers, leakage) for a in answers) / len(answers)


def mean_length(answers: Sequence[str]) -> float:
    """Mean answer length in characters, whitespace not counted (0.0 for no answers)."""
    return sum(len(chars(a)) for a in answers) / len(answers) if answers else 0.0


def distinct_2(answers: Iterable[str]) -> float:
    """Distinct character bigrams / all character bigrams over the answers (see the module docstring)."""
    seen, total = set(), 0
    for answer in answers:
        text = chars(answer)
        pairs = [text[i:i + 2] for i in range(len(text) - 1)]
        total += len(pairs)
        seen.update(pairs)
    return len(seen) / total if total else 0.0


def changed_share(base: Sequence[str], tuned: Sequence[str]) -> float:
    """Share of aligned answer pairs that differ (ends stripped); 0.0 for none."""
    pairs = list(zip(base, tuned))
    return sum(a.strip() != b.strip() for a, b in pairs) / len(pairs) if pairs else 0.0


def ranked_samples(samples: Sequence[dict], count: int = 3) -> tuple[list[dict], list[dict]]:
    """(best, worst) `count` samples by their "rouge_l", best first and worst first; ties keep order."""
    order = sorted(range(len(samples)), key=lambda i: (-samples[i]["rouge_l"], i))
    best = [samples[i] for i in order[:count]]
    worst = [samples[i] for i in sorted(range(len(samples)), key=lambda i: (samples[i]["rouge_l"], i))[:count]]
    return best, worst
