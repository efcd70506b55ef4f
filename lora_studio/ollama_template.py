"""Ollama's TEMPLATE for a run: derived from the run's own chat template by rendering, never translated.

Jinja is not hand-translated. The run's renderer renders conversations whose contents are sentinels
(a system prompt, then one to three user turns with answers between them, always with the generation
prompt, as Ollama asks for the next answer), and the literal text around each sentinel is the turn
structure: what opens the conversation with and without a system prompt, what joins a user turn to
its answer, an answer to the next user turn, and the last user turn to the generation prompt. That
covers ChatML, Llama-3 headers, Index, Gemma-style templates that fold the system prompt into the
first user turn, and Qwen3-style templates whose reasoning block comes only before the last answer
or in the generation prompt (history answers, which Ollama always sends, carry none). A template
whose glue changes from turn to turn, or that writes a content anywhere but once and in order, is
refused with a message naming it. Two limits are said, not hidden: Go's templates cannot strip a
content as Llama-3's `| trim` does (a message with leading or trailing spaces then differs), and a
system message anywhere but first renders as if it were first (Ollama's clients send one, first).

What Ollama does, and what the emitted template relies on (ollama/ollama: server/routes.go,
template/template.go, model/models/*): the Modelfile's SYSTEM becomes a first "system" message when
the request has none; `collate` keeps system messages in `.Messages` (and joins their contents into
`.System`), merging consecutive messages of one role with a blank line; the template is Go
text/template with `missingkey=zero`; the prompt is tokenised with special tokens parsed, and a BOS
token is put in front when the GGUF's `tokenizer.ggml.add_bos_token` says so (true when the key is
missing). So the template reads the system prompt from `.Messages`, where the chat template puts it,
and writes the template's BOS text only when Ollama does not add one itself.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from . import gotemplate
from .export import ExportError
from .i18n import msg

SYSTEM_SENTINEL = "LSXSYSTEMX0"
TURNS = 3


def _user(k: int) -> str:
    return f"LSXUSERX{k}"


def _answer(k: int) -> str:
    return f"LSXANSWERX{k}"


@dataclass(frozen=True)
class TurnGlue:
    """The literal text around each role's content in the run's chat template."""
    opening: str          # before the first user turn, no system prompt
    system_before: str    # before the system prompt's content
    system_after: str     # after it, up to the first user turn's content
    system_shown: bool    # False: the template drops a system prompt (system_before holds all it writes)
    to_answer: str        # after a user turn that an answer follows (history)
    to_user: str          # after an answer, up to the next user turn's content
    generation: str       # after the last user turn: the generation prompt
    bos: str = ""         # the BOS text the opening starts with, when Ollama adds the BOS itself
    trims: bool = False   # the chat template strips contents (Llama-3's `| trim`); Go's templates cannot


def template_name(renderer) -> str:
    if renderer.template not in ("", "auto"):
        return renderer.template
    return getattr(renderer.tokenizer, "name_or_path", "") or "?"


def _refuse(renderer, detail: str):
    return ExportError(msg("ollama.template_unexpressible", template=template_name(renderer), detail=detail),
                       msg("ollama.where_template"), msg("ollama.template_unexpressible_fix"))


def _conversation(turns: int, system: bool) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_SENTINEL}] if system else []
    for k in range(1, turns + 1):
        messages.append({"role": "user", "content": _user(k)})
        if k < turns:
            messages.append({"role": "assistant", "content": _answer(k)})
    return messages


def _split(renderer, text: str, messages: list[dict]) -> list[str]:
    """The glue before, between and after the contents, each found exactly once and in order."""
    glue, at = [], 0
    for message in messages:
        content = message["content"]
        if text.count(content) != 1 or text.find(content, at) < 0:
            raise _refuse(renderer, f"{message['role']}: {text!r}")
        found = text.find(content, at)
        glue.append(text[at:found])
        at = found + len(content)
    glue.append(text[at:])
    return glue


def derive(renderer, adds_bos: bool) -> TurnGlue:
    """The run's turn structure; `adds_bos`: Ollama puts the BOS token first itself (the GGUF says so)."""
    from jinja2 import TemplateError

    found = []
    for turns in range(1, TURNS + 1):
        messages = _conversation(turns, system=False)
        glue = _split(renderer, renderer.render_text(messages, add_generation_prompt=True), messages)
        found.append((glue[0], glue[1:-1:2], glue[2:-1:2], glue[-1]))
    opening, generation = found[0][0], found[0][3]
    to_answer, to_user = found[-1][1][0] if found[-1][1] else "", found[-1][2][0] if found[-1][2] else ""
    for first, answers, users, last in found:
        if first != opening or last != generation or any(g != to_answer for g in answers) \
                or any(g != to_user for g in users):
            raise _refuse(renderer, "turn glue changes from turn to turn")
    system_before, system_after, shown = opening, "", False
    try:
        messages = _conversation(2, system=True)
        text = renderer.render_text(messages, add_generation_prompt=True)
    except TemplateError:  # a template that refuses a system role: runs of it have no system prompt
        text = None
    if text is not None:
        plain = renderer.render_text(_conversation(2, system=False), add_generation_prompt=True)
        first_user = text.find(_user(1))
        if first_user < 0 or text[first_user:] != plain[plain.find(_user(1)):]:
            raise _refuse(renderer, "the system prompt changes more than the conversation's opening")
        head = text[:first_user]
        shown = head.count(SYSTEM_SENTINEL) == 1
        system_before, _, system_after = head.partition(SYSTEM_SENTINEL) if shown else (head, "", "")
    bos = _strip_bos(renderer, adds_bos, opening, system_before)
    padded = f" {_user(1)} "
    trims = padded not in renderer.render_text([{"role": "user", "content": padded}], add_generation_prompt=True)
    return TurnGlue(opening[len(bos):], system_before[len(bos):], system_after, shown, to_answer, to_user,
                    generation, bos, trims)


def _strip_bos(renderer, adds_bos: bool, *openings: str) -> str:
    bos = getattr(renderer.tokenizer, "bos_token", None) or ""
    if adds_bos and bos and all(o.startswith(bos) for o in openings):
        return bos
    return ""


# --- the Go template -------------------------------------------------------------------------------
def go_literal(text: str) -> str:
    """`text` as template source: plain where Go and the Modelfile keep it as is, else a Go string."""
    plain = (text and text == text.strip() and text.isprintable() and '"' not in text and "{{" not in text
             and "}}" not in text)
    if plain or not text:
        return text
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char])
        elif not char.isprintable() or char in "{}":  # braces escaped: no "{{" or "}}" inside an action
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return '{{ "' + "".join(out) + '" }}'


def _either(condition: str, yes: str, no: str) -> str:
    if yes == no:
        return go_literal(yes)
    if not no:
        return f"{{{{ if {condition} }}}}{go_literal(yes)}{{{{ end }}}}"
    return f"{{{{ if {condition} }}}}{go_literal(yes)}{{{{ else }}}}{go_literal(no)}{{{{ end }}}}"


def go_template(glue: TurnGlue) -> str:
    """The TEMPLATE text: one pass over .Messages, each role's glue written where the chat template has it."""
    system = (go_literal(glue.system_before) + "{{ .Content }}" + go_literal(glue.system_after)
              if glue.system_shown else go_literal(glue.system_before))
    user = _either("eq $i 0", glue.opening, "") + "{{ .Content }}" + _either("$last", glue.generation,
                                                                           glue.to_answer)
    answer = "{{ .Content }}" + _either("not $last", glue.to_user, "")
    return "\n".join((
        "{{- /* LoRA Studio: derived from the run's chat template and checked against it */ -}}",
        "{{- range $i, $_ := .Messages }}",
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}",
        '{{- if eq .Role "system" }}' + system,
        '{{- else if eq .Role "user" }}' + user,
        '{{- else if eq .Role "assistant" }}' + answer,
        "{{- end }}",
        "{{- end }}",
    ))


# --- what Ollama renders, and the proof ------------------------------------------------------------
def ollama_values(messages: list[dict], system_prompt: str) -> dict:
    """The values Ollama executes its template with for a chat request, SYSTEM applied (see the docstring)."""
    messages = [dict(m) for m in messages]
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    collated = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system, "Messages": collated, "Response": ""}


def sample_conversations(user_texts: list[str], answers: list[str]) -> list[list[dict]]:
    """One to three user turns (the last waiting for its answer), from the given texts."""
    conversations = []
    for turns in range(1, TURNS + 1):
        messages = []
        for k in range(turns):
            messages.append({"role": "user", "content": user_texts[k % len(user_texts)]})
            if k < turns - 1:
                messages.append({"role": "assistant", "content": answers[k % len(answers)]})
        conversations.append(messages)
    return conversations


@dataclass(frozen=True)
class TemplateCheck:
    cases: int
    python_equal: int
    go_equal: int | None      # None: Go is not installed
    first_difference: str = ""

    @property
    def passed(self) -> bool:
        return self.python_equal == self.cases and self.go_equal in (None, self.cases)

    def to_json(self) -> dict:
        return {"cases": self.cases, "python_evaluator_equal": self.python_equal, "go_equal": self.go_equal,
                "first_difference": self.first_difference, "passed": self.passed}


def check(source: str, glue: TurnGlue, renderer, conversations: list[list[dict]],
          system_prompts: list[str]) -> TemplateCheck:
    """Render every conversation (under every system prompt) as Ollama would and as chat does; compare."""
    from jinja2 import TemplateError

    expected, cases = [], []
    for system in system_prompts:
        for messages in conversations:
            try:
                wanted = renderer.render_text(renderer.with_system(messages, system), add_generation_prompt=True)
            except TemplateError:  # a template with no system role: chat cannot send one either
                continue
            expected.append(wanted)
            cases.append(ollama_values(messages, system))
    python = [glue.bos + gotemplate.render(source, values) for values in cases]
    differences = [f"{want!r} != {got!r}" for want, got in zip(expected, python) if want != got]
    try:
        go = gotemplate.go_render(source, cases)
    except (gotemplate.GoTemplateError, subprocess.SubprocessError, OSError) as exc:
        go, differences = [], differences + [f"Go: {exc}"]
    go = None if go is None else [glue.bos + text for text in go]
    if go is not None:
        differences += [f"Go: {want!r} != {got!r}" for want, got in zip(expected, go) if want != got]
    return TemplateCheck(len(cases), sum(a == b for a, b in zip(expected, python)),
                         None if go is None else sum(a == b for a, b in zip(expected, go)),
                         differences[0] if differences else "")
