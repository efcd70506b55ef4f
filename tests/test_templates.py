"""Rendering with the tokenizer's own chat template, and which tokens are trained (real Qwen2 tokenizer)."""

import json

import pytest

from lora_studio.errors import ModelError
from lora_studio.templates import IGNORE_INDEX, ChatRenderer, truncate

from .conftest import HUANHUAN, QWEN_TOKENIZER

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return ChatRenderer(tokenizer, system_prompt=SYSTEM)


def trained_text(tokenizer, example):
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


def conversation(*turns):
    roles = ["user", "assistant"] * len(turns)
    return [{"role": role, "content": text} for role, text in zip(roles, turns)]


def test_known_token_ids(tokenizer):
    assert tokenizer("<|im_start|>hello<|im_end|>")["input_ids"] == [151644, 14990, 151645]


def test_labels_cover_answer_and_end_of_turn_only(tokenizer, renderer):
    example = renderer.encode_example(conversation("你是谁？", "家父是大理寺少卿甄远道。"))
    assert tokenizer.decode(example.input_ids).startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
    assert trained_text(tokenizer, example) == "家父是大理寺少卿甄远道。<|im_end|>"
    # the newline the template writes after <|im_end|> is not trained, nor the pad/eos token
    assert example.labels[-1] == IGNORE_INDEX and tokenizer.pad_token_id not in example.labels


def test_history_turns_are_all_trained(tokenizer, renderer):
    example = renderer.encode_example(conversation("你好", "皇上万福。", "今日可好？", "臣妾一切安好。"))
    assert trained_text(tokenizer, example) == "皇上万福。<|im_end|>臣妾一切安好。<|im_end|>"


def test_trained_end_token_is_a_generation_stop_token(tokenizer, renderer):
    example = renderer.encode_example(conversation("你是谁？", "我是甄嬛。"))
    trained = [label for label in example.labels if label != IGNORE_INDEX]
    assert trained[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert trained[-1] in renderer.stop_token_ids
    assert 0 not in trained  # nothing like the tutorial's pad-as-end token


def test_chat_prompt_equals_training_prompt(renderer):
    """Chat feeds the model exactly the tokens training put before the answer (no role-word drift)."""
    messages = conversation("你是谁？", "我是甄嬛。")
    example = renderer.encode_example(messages)
    prompt = renderer.encode_prompt(messages[:1])
    assert example.input_ids[: len(prompt)] == prompt
    assert example.labels[len(prompt)] != IGNORE_INDEX and example.labels[len(prompt) - 1] == IGNORE_INDEX


def test_own_system_prompt_wins_over_default(tokenizer, renderer):
    messages = [{"role": "system", "content": "你是华妃。"}, *conversation("你是谁？", "本宫是华妃。")]
    assert "你是华妃。" in tokenizer.decode(renderer.encode_example(messages).input_ids)
    assert SYSTEM not in tokenizer.decode(renderer.encode_example(messages).input_ids)


def test_long_answer_is_cut_at_its_tail(renderer):
    example = renderer.encode_example(conversation("你是谁？", "甄嬛" * 300), cutoff_len=64)
    full = renderer.encode_example(conversation("你是谁？", "甄嬛" * 300))
    assert example.truncated and len(example.input_ids) == 64
    assert example.input_ids == full.input_ids[:64] and example.labels == full.labels[:64]


def test_long_prompt_keeps_the_boundary(tokenizer, renderer):
    example = renderer.encode_example(conversation("长" * 400, "臣妾在此。"), cutoff_len=48)
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    assert example.truncated and len(example.input_ids) <= 48
    assert tokenizer.decode(example.input_ids[first - 3:first]) == "<|im_start|>assistant\n"
    assert trained_text(tokenizer, example) == "臣妾在此。<|im_end|>"
    assert tokenizer.decode(example.input_ids[:3]).startswith("<|im_start|>system")


def test_short_example_is_untouched(renderer):
    example = renderer.encode_example(conversation("你好", "好。"))
    assert truncate(example, 10_000) is example and not example.truncated


def test_tokenizer_without_template_needs_a_builtin(tokenizer):
    from copy import copy

    bare = copy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        ChatRenderer(bare)
    assert ChatRenderer(bare, template="chatml").end_of_turn_ids == [151645]


def test_every_real_record_encodes_within_the_tutorial_cutoff(renderer):
    records = json.loads(HUANHUAN.read_text(encoding="utf-8"))
    assert len(records) == 3729
    truncated = 0
    for record in records:
        prompt = record["instruction"] + ("\n" + record["input"] if record["input"] else "")
        example = renderer.encode_example(conversation(prompt, record["output"]), cutoff_len=384)
        assert example.trained_tokens > 1
        truncated += example.truncated
    assert truncated == 0  # the longest record (304 characters) fits in 384 tokens with this tokenizer
