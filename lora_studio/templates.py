"""Render conversations with the tokenizer's own chat template, and mark which tokens are trained.

Training and chat share one `ChatRenderer`: training encodes whole conversations, chat encodes the
same messages with `add_generation_prompt=True`, so the two cannot disagree. Labels are -100
everywhere except the assistant's content and the template's end-of-turn token, both located in the
template's own rendered text (character offsets), never guessed from role names.

When a renderer is built it proves, on a probe conversation, that the tokens before each trained answer
are exactly chat's prompt for the same history, and refuses a template where they are not. Some
templates render a turn differently once it is history (Qwen3-style ones put an empty reasoning block
only before the last answer): their earlier answers are context, and only answers whose history
renders like chat's prompt are trained (`trains_history_turns` says whether all are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .config import Setting
from .errors import ModelError
from .i18n import msg

IGNORE_INDEX = -100

# Built-in templates, only for models whose tokenizer ships no chat template.
BUILTIN_TEMPLATES = MappingProxyType({
    # bilibili's Index chat format: <unk>{system}reserved_0{user}reserved_1{assistant}</s>
    "index": (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'system' -%}<unk>{{ m['content'] }}"
        "{%- elif m['role'] == 'user' -%}reserved_0{{ m['content'] }}reserved_1"
        "{%- elif m['role'] == 'assistant' -%}{{ m['content'] }}</s>"
        "{%- endif -%}{%- endfor -%}"
    ),
    "chatml": (
        "{%- for m in messages -%}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    ),
})


# Template switches that change what precedes an answer. Off by default when a template mentions one
# (a role-play answer carries no reasoning); tried when parity fails, so the refusal can name the fix.
KNOWN_SWITCHES = ("enable_thinking",)

# The parity probe: a system prompt and two turns, so both a history turn and the last answer are checked.
PARITY_PROBE = (
    MappingProxyType({"role": "system", "content": "You are a probe."}),
    MappingProxyType({"role": "user", "content": "hello"}),
    MappingProxyType({"role": "assistant", "content": "hi there"}),
    MappingProxyType({"role": "user", "content": "how are you"}),
    MappingProxyType({"role": "assistant", "content": "fine thanks"}),
)


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def default_switches(chat_template: str, given: Mapping | None) -> dict:
    """The user's template switches, or known switches off when the user gave none (see KNOWN_SWITCHES)."""
    if given:
        return dict(given)
    return {name: False for name in KNOWN_SWITCHES if name in chat_template}


def resolve_template(tokenizer, template: str = "auto", model_type: str | None = None) -> str:
    """Pick the Jinja template: the tokenizer's own unless a built-in is named or none exists."""
    if template not in ("auto", *BUILTIN_TEMPLATES):
        raise ModelError(msg("templates.unknown", name=template), Setting.template,
                         msg("templates.unknown_fix", names=", ".join(BUILTIN_TEMPLATES)))
    if template != "auto":
        return BUILTIN_TEMPLATES[template]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    if model_type == "index":
        return BUILTIN_TEMPLATES["index"]
    raise ModelError(msg("templates.no_template"), Setting.template,
                     msg("templates.no_template_fix", key=Setting.template, names=", ".join(BUILTIN_TEMPLATES)))


class ChatRenderer:
    """Turns message lists into token ids (and labels) with one chat template."""

    def __init__(self, tokenizer, template: str = "auto", model_type: str | None = None,
                 system_prompt: str = "", template_kwargs: Mapping | None = None):
        self.tokenizer = tokenizer
        self.template = template
        self.chat_template = resolve_template(tokenizer, template, model_type)
        self.template_kwargs = default_switches(self.chat_template, template_kwargs)
        self.system_prompt = system_prompt
        self.end_of_turn_ids = self._find_end_of_turn()
        eos = tokenizer.eos_token_id
        self.stop_token_ids = sorted(set(self.end_of_turn_ids) | ({eos} if eos is not None else set()))
        self.trains_history_turns = self._prove_parity()

    # --- rendering -------------------------------------------------------------------------------
    def with_system(self, messages: list[dict], system_prompt: str | None = None) -> list[dict]:
        """Prepend the default system prompt when the conversation has none of its own."""
        system = self.system_prompt if system_prompt is None else system_prompt
        if messages and messages[0]["role"] == "system" or not system:
            return list(messages)
        return [{"role": "system", "content": system}, *messages]

    def render_text(self, messages: list[dict], add_generation_prompt: bool = False,
                    switches: Mapping | None = None) -> str:
        """The template's text; `switches` replaces the renderer's own template kwargs (for the parity probe)."""
        kwargs = self.template_kwargs if switches is None else switches
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt, **kwargs)

    def encode_prompt(self, messages: list[dict], system_prompt: str | None = None) -> list[int]:
        """Token ids that ask the model for the next assistant turn (what chat feeds `generate`)."""
        text = self.render_text(self.with_system(messages, system_prompt), add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- training encoding -----------------------------------------------------------------------
    def encode_example(self, messages: list[dict], cutoff_len: int | None = None) -> EncodedExample:
        """Token ids of a whole conversation with labels on assistant content and end-of-turn tokens."""
        messages = self.with_system(messages)
        text = self.render_text(messages)
        spans = self._trained_spans(messages, text)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in spans:
            for i, (a, b) in enumerate(offsets):
                if b > start and a < end and b > a:
                    labels[i] = ids[i]
        self._label_end_of_turn(ids, offsets, labels, spans)
        example = EncodedExample(ids, labels)
        return truncate(example, cutoff_len) if cutoff_len else example

    def _trained_spans(self, messages: list[dict], text: str) -> list[tuple[int, int]]:
        """Character spans of the assistant answers that follow chat's prompt for their history exactly.

        An answer whose history the template renders otherwise (a history turn of a Qwen3-style template)
        stays context: training it would teach a prompt chat never shows.
        """
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = self.render_text(messages[:i], add_generation_prompt=True)
            if not text.startswith(prefix):
                continue
            content = answer_at(text, len(prefix), message["content"])
            if content is None:
                raise ModelError(msg("templates.changes_text", turn=i), Setting.template,
                                 msg("templates.pick_builtin_fix"))
            spans.append((len(prefix), len(prefix) + len(content)))
        return spans

    # --- the parity proof ------------------------------------------------------------------------
    def _prove_parity(self) -> bool:
        """Refuse a template whose last answer is not preceded by chat's prompt; True when every answer is."""
        held = self._answers_in_parity(self.template_kwargs)
        if held[-1]:
            return all(held)
        raise ModelError(msg("templates.no_parity", template=self._template_name(), turn=len(held)),
                         Setting.template, self._parity_fix())

    def _answers_in_parity(self, switches: Mapping) -> list[bool]:
        """Per probe answer: do the whole conversation's tokens start with chat's prompt, then the answer?"""
        from jinja2 import TemplateError

        messages = list(PARITY_PROBE)
        try:
            text = self.render_text(messages, switches=switches)
        except TemplateError:  # a template with no system role may refuse one; its users give none
            messages = messages[1:]
            text = self.render_text(messages, switches=switches)
        ids = self._ids(text)
        held = []
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                prompt = self.render_text(messages[:i], add_generation_prompt=True, switches=switches)
                prompt_ids = self._ids(prompt)
                held.append(ids[:len(prompt_ids)] == prompt_ids and text.startswith(prompt + message["content"]))
        return held

    def _parity_fix(self):
        for name in KNOWN_SWITCHES:
            if name not in self.chat_template:
                continue
            value = not self.template_kwargs.get(name, False)
            if self._answers_in_parity({**self.template_kwargs, name: value})[-1]:
                return msg("templates.no_parity_switch_fix", key=Setting.chat_template_kwargs, switch=name,
                           value=str(value).lower())
        return msg("templates.no_parity_fix", names=", ".join(BUILTIN_TEMPLATES))

    def _template_name(self):
        if self.template in BUILTIN_TEMPLATES:
            return msg("templates.builtin_template", name=self.template)
        return msg("templates.tokenizer_template", name=getattr(self.tokenizer, "name_or_path", "") or "?")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _label_end_of_turn(self, ids, offsets, labels, spans) -> None:
        """Train the first end-of-turn token that follows each assistant span."""
        for _, end in spans:
            for i, (a, _b) in enumerate(offsets):
                if a >= end and ids[i] in self.end_of_turn_ids:
                    labels[i] = ids[i]
                    break

    def _find_end_of_turn(self) -> list[int]:
        """The special token(s) the template writes right after an assistant's content."""
        probe = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
        text = self.render_text(probe)
        prefix = self.render_text(probe[:1], add_generation_prompt=True)
        start = text.find("2", len(prefix) if text.startswith(prefix) else 0)
        tail = text[start + 1:]
        special = {t for t in self.tokenizer.all_special_tokens}
        special |= {t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
                    if getattr(t, "special", False)}
        found = []
        for token in sorted(special, key=len, reverse=True):
            at = tail.find(token)
            if at >= 0:
                found.append((at, token))
        if not found:
            raise ModelError(msg("templates.no_end_of_turn"), Setting.template,
                             msg("templates.no_end_of_turn_fix"))
        token = min(found)[1]
        return [self.tokenizer.convert_tokens_to_ids(token)]


def answer_at(text: str, start: int, content: str) -> str | None:
    """The answer as the template wrote it at `start`: verbatim, or stripped (some templates strip it)."""
    for shown in (content, content.strip()):
        if text.startswith(shown, start):
            return shown
    return None


def truncate(example: EncodedExample, cutoff_len: int) -> EncodedExample:
    """Cut a long example to `cutoff_len` tokens, keeping labels aligned with their tokens.

    The answer's tail is dropped first. When the prompt alone would leave fewer than a quarter of the
    budget for the answer, tokens are dropped from the middle of the prompt instead, so the system
    prompt's start and the assistant header right before the answer both survive.
    """
    ids, labels = example.input_ids, example.labels
    if len(ids) <= cutoff_len:
        return example
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids))
    answer_keep = min(len(ids) - first, max(1, cutoff_len // 4))
    overflow = first + answer_keep - cutoff_len
    if overflow > 0:
        head = (first - overflow) // 2
        ids = ids[:head] + ids[head + overflow:]
        labels = labels[:head] + labels[head + overflow:]
    return EncodedExample(ids[:cutoff_len], labels[:cutoff_len], truncated=True)
