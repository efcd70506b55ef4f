"""Training and chat agree for every template family: the tokens before each trained answer are chat's prompt.

The templates below were written for this project; each behaves like one family's (ChatML, Qwen3 with
its enable_thinking switch, Llama-3 headers with a BOS, Gemma with no system role, a template that drops
earlier turns' reasoning). They run on the real Qwen2 tokenizer, given the family's special tokens.
"""

import pytest

from lora_studio.config import RunConfig, Setting, from_dict
from lora_studio.errors import ModelError
from lora_studio.settings import fields_of, from_widget_text, widget_text
from lora_studio.templates import IGNORE_INDEX, ChatRenderer

from .conftest import QWEN_TOKENIZER

QWEN3_STYLE = (
    "{%- set last = namespace(user=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set last.user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}{{ '<|im_start|>assistant\n' }}"
    "{%- if loop.index0 > last.user -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}"
    "{{ m.content + '<|im_end|>\n' }}"
    "{%- else -%}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}"
    "{%- endif -%}"
)
LLAMA3_STYLE = (
    "{{ bos_token }}{%- for m in messages -%}"
    "{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)
GEMMA_STYLE = (  # no system role: the system prompt opens the first user turn
    "{{ bos_token }}"
    "{%- if messages[0].role == 'system' -%}{%- set folded = messages[0].content + '\n\n' -%}"
    "{%- set turns = messages[1:] -%}{%- else -%}{%- set folded = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}{%- set role = 'model' if m.role == 'assistant' else m.role -%}"
    "{{ '<start_of_turn>' + role + '\n' + (folded if loop.first else '') + m.content + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
DROPS_REASONING = (  # earlier answers lose their reasoning block once they are history
    "{%- for m in messages -%}{%- set content = m.content -%}"
    "{%- if m.role == 'assistant' and not loop.last and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\n' + content + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
ALWAYS_THINKS = QWEN3_STYLE.replace("enable_thinking", "show_nothing")  # a block chat's prompt never has

# family -> (chat template or built-in name, special tokens to add, end-of-turn token, trains history turns)
FAMILIES = {
    "chatml": ("chatml", {}, "<|im_end|>", True),
    "qwen2-own": (None, {}, "<|im_end|>", True),
    "qwen3-style": (QWEN3_STYLE, {}, "<|im_end|>", False),
    "llama3-style": (LLAMA3_STYLE, {"bos_token": "<|begin_of_text|>", "additional_special_tokens": [
        "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}, "<|eot_id|>", True),
    "gemma-style": (GEMMA_STYLE, {"bos_token": "<bos>", "additional_special_tokens": [
        "<start_of_turn>", "<end_of_turn>"]}, "<end_of_turn>", True),
    "index": ("index", {"unk_token": "<unk>", "eos_token": "</s>", "additional_special_tokens": [
        "reserved_0", "reserved_1"]}, "</s>", True),
    "drops-reasoning": (DROPS_REASONING, {}, "<|im_end|>", True),
}
CONVERSATION = [
    {"role": "system", "content": "现在你要扮演皇帝身边的女人--甄嬛"},
    {"role": "user", "content": "你是谁？"},
    {"role": "assistant", "content": "家父是大理寺少卿甄远道。"},
    {"role": "user", "content": "今日可好？"},
    {"role": "assistant", "content": "臣妾一切安好。"},
]
HEADERS = ("<|im_start|>", "assistant", "<|start_header_id|>", "<start_of_turn>", "model\n", "reserved_1", "<think>")


def family_tokenizer(template, special):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    if special:
        tokenizer.add_special_tokens(special)
    if template not in (None, "chatml", "index"):
        tokenizer.chat_template = template
    return tokenizer


def family_renderer(name, **kwargs):
    template, special, _, _ = FAMILIES[name]
    builtin = template if template in ("chatml", "index") else "auto"
    return ChatRenderer(family_tokenizer(template, special), template=builtin, **kwargs)


def trained_text(tokenizer, example):
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


@pytest.mark.parametrize("name", FAMILIES)
def test_trained_answers_follow_the_chat_prompt(name):
    renderer = family_renderer(name)
    _, _, end, all_turns = FAMILIES[name]
    assert renderer.trains_history_turns is all_turns
    example = renderer.encode_example(CONVERSATION)
    answers = [2, 4] if all_turns else [4]
    trained = trained_text(renderer.tokenizer, example)
    assert trained == "".join(CONVERSATION[i]["content"] + end for i in answers)
    assert not any(header in trained for header in HEADERS)  # no reasoning block, no role header
    for i in answers:
        prompt = renderer.encode_prompt(CONVERSATION[:i])
        assert example.input_ids[:len(prompt)] == prompt
        assert example.labels[len(prompt)] != IGNORE_INDEX and example.labels[len(prompt) - 1] == IGNORE_INDEX


def test_qwen3_style_thinking_is_off_by_default_in_training_and_chat():
    renderer = family_renderer("qwen3-style")
    assert renderer.template_kwargs == {"enable_thinking": False}
    prompt = renderer.tokenizer.decode(renderer.encode_prompt(CONVERSATION[:4]))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    whole = renderer.tokenizer.decode(renderer.encode_example(CONVERSATION).input_ids)
    assert whole.startswith(prompt)


def test_qwen3_style_with_thinking_on_is_refused_with_the_switch_named():
    with pytest.raises(ModelError) as caught:
        family_renderer("qwen3-style", template_kwargs={"enable_thinking": True})
    assert str(QWEN_TOKENIZER) in caught.value.message
    assert "chat_template_kwargs: {enable_thinking: false}" in caught.value.render("en")
    assert "enable_thinking: false" in caught.value.render("zh")


def test_template_without_a_switch_is_refused_naming_the_template():
    tokenizer = family_tokenizer(ALWAYS_THINKS, {})
    with pytest.raises(ModelError, match="chat prompt for the same history") as caught:
        ChatRenderer(tokenizer)
    assert str(QWEN_TOKENIZER) in caught.value.message
    assert "enable_thinking" not in caught.value.render("en") and "chatml" in caught.value.render("en")


def test_template_that_refuses_a_system_role_is_probed_without_one():
    refuses = ("{%- if messages[0].role == 'system' -%}{{ raise_exception('System role not supported') }}"
               "{%- endif -%}" + GEMMA_STYLE)
    tokenizer = family_tokenizer(refuses, FAMILIES["gemma-style"][1])
    example = ChatRenderer(tokenizer).encode_example(CONVERSATION[1:3])
    assert trained_text(tokenizer, example) == CONVERSATION[2]["content"] + "<end_of_turn>"


def test_chat_template_kwargs_setting_reads_yaml_text_and_shows_as_one_line():
    spec = fields_of(RunConfig)[Setting.chat_template_kwargs]
    assert RunConfig().chat_template_kwargs == {}
    config = from_dict({Setting.chat_template_kwargs: "{enable_thinking: false}"})
    assert config.chat_template_kwargs == {"enable_thinking": False}
    shown = widget_text(spec, config.chat_template_kwargs)
    assert shown == "{enable_thinking: false}" and widget_text(spec, {}) == ""
    again = from_dict({Setting.chat_template_kwargs: from_widget_text(spec, shown)})
    assert again.chat_template_kwargs == config.chat_template_kwargs
    with pytest.raises(Exception, match="mapping of name: value"):
        from_dict({Setting.chat_template_kwargs: "[1, 2]"})


def test_renderer_for_passes_the_kwargs(ws, demo_model_dir):
    from lora_studio.models import renderer_for

    config = from_dict({Setting.model_name_or_path: str(demo_model_dir),
                        Setting.chat_template_kwargs: {"enable_thinking": True}})
    assert renderer_for(config, ws).template_kwargs == {"enable_thinking": True}
