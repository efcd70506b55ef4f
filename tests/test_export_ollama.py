"""The Ollama export: the Modelfile's content, and a TEMPLATE that renders exactly what the chat template does.

The GGUF itself is helper territory (export_gguf); here a tiny GGUF carrying only the tokenizer facts
Ollama reads (add_bos_token, token types) stands in for it. The TEMPLATE is checked for each template
family of test_template_parity (their templates are imported from there, not copied): through the
Python evaluator always, through Go's own text/template when Go is installed.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import types
from types import SimpleNamespace

import pytest

from lora_studio import gotemplate
from lora_studio.config import RunConfig
from lora_studio.export_context import ExportContext
from lora_studio.export import ExportError
from lora_studio.ollama_template import check, derive, go_template, ollama_values, sample_conversations

from .test_template_parity import CONVERSATION, FAMILIES, family_tokenizer
from .test_template_parity import family_renderer as _family_renderer

PERSONA = CONVERSATION[0]["content"]
USERS = [m["content"] for m in CONVERSATION if m["role"] == "user"] + ["Who are you?"]
ANSWERS = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
HAS_GO = gotemplate.find_go() is not None


@functools.lru_cache(maxsize=None)
def family_renderer(name):
    """One renderer per family for the whole file (each loads the Qwen2 tokenizer from disk)."""
    return _family_renderer(name)


def write_gguf(path, add_bos=False, token_types=None):
    """A GGUF with only the tokenizer facts the Modelfile depends on (add_bos None: key missing)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    if add_bos is not None:
        writer.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    token_types = token_types or {"<|endoftext|>": 3, "<|im_start|>": 3, "<|im_end|>": 3}
    writer.add_token_list(list(token_types))
    writer.add_token_types(list(token_types.values()))
    writer.add_tensor("token_embd.weight", np.zeros((len(token_types), 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def fake_gguf(monkeypatch):
    """export_gguf.build_gguf replaced by one writing a tiny GGUF; returns the facts to give it."""
    try:
        import lora_studio.export_gguf as module
    except ImportError:  # helper C's module not there yet
        module = types.ModuleType("lora_studio.export_gguf")
        monkeypatch.setitem(sys.modules, "lora_studio.export_gguf", module)
    facts = {"add_bos": False, "token_types": None}

    def build_gguf(ctx):
        return write_gguf(ctx.staging / "tiny-persona-f16.gguf", **facts)

    monkeypatch.setattr(module, "build_gguf", build_gguf, raising=False)
    return facts


def demo_context(ws, demo_model_dir, tmp_path, sampling=None, **config_changes):
    from lora_studio.models import renderer_for

    run = tmp_path / "runs" / "tiny-persona"
    run.mkdir(parents=True)
    if sampling is not None:
        (run / "sampling.yaml").write_text(json.dumps(sampling), encoding="utf-8")
    config = RunConfig(**{"model_name_or_path": str(demo_model_dir), "system_prompt": PERSONA,
                          "run_name": "tiny-persona", **config_changes})
    staging = tmp_path / "staging"
    staging.mkdir()
    logged = []
    ctx = ExportContext(request=SimpleNamespace(run=run, hub_id=""), workspace=ws, config=config,
                        adapter=run / "adapter", staging=staging, renderer=renderer_for(config, ws),
                        log=logged.append)
    return ctx, logged


def modelfile_template(text: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)


def jinja_and_ollama(renderer, template: str, bos: str = "", systems=("", PERSONA)):
    """(chat's prompt, what Ollama renders) for 1-3 turn conversations under each system prompt."""
    pairs = []
    for system in systems:
        for messages in sample_conversations(USERS, ANSWERS):
            want = renderer.render_text(renderer.with_system(messages, system), add_generation_prompt=True)
            pairs.append((want, bos + gotemplate.render(template, ollama_values(messages, system))))
    return pairs


# --- the Modelfile -------------------------------------------------------------------------------
def test_the_modelfile_for_the_demo_model(ws, demo_model_dir, tmp_path, fake_gguf):
    from lora_studio.export_ollama import build_ollama, create_command

    saved = {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.2, "max_new_tokens": 99,
             "seed": 7}
    ctx, logged = demo_context(ws, demo_model_dir, tmp_path, sampling=saved)
    modelfile = build_ollama(ctx)
    text = modelfile.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert modelfile == ctx.staging / "Modelfile"
    assert "FROM ./tiny-persona-f16.gguf" in lines
    stops = [line for line in lines if line.startswith("PARAMETER stop ")]
    tokenizer = ctx.renderer.tokenizer
    assert len(stops) == len(ctx.renderer.stop_token_ids) == 2
    assert sorted(stops) == sorted(f'PARAMETER stop "{tokenizer.convert_ids_to_tokens(i)}"'
                                   for i in ctx.renderer.stop_token_ids)
    assert {'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"'} == set(stops)
    for line in ("PARAMETER temperature 0.5", "PARAMETER top_p 0.9", "PARAMETER top_k 40",
                 "PARAMETER repeat_penalty 1.2", "PARAMETER num_predict 99", "PARAMETER seed 7",
                 "PARAMETER repeat_last_n -1"):
        assert line in lines
    assert f'SYSTEM """{PERSONA}"""' in lines
    template = modelfile_template(text)
    for want, got in jinja_and_ollama(ctx.renderer, template):
        assert got == want
    if HAS_GO:  # the TEMPLATE exactly as written in the Modelfile, through Go's text/template
        cases = [ollama_values(m, PERSONA) for m in sample_conversations(USERS, ANSWERS)]
        wanted = [ctx.renderer.render_text(ctx.renderer.with_system(m), add_generation_prompt=True)
                  for m in sample_conversations(USERS, ANSWERS)]
        assert gotemplate.go_render(template, cases) == wanted
    assert create_command(ctx.staging) == "ollama create tiny-persona -f Modelfile"
    assert (ctx.staging / "commands.txt").read_text(encoding="utf-8").splitlines() == [
        "ollama create tiny-persona -f Modelfile", "ollama run tiny-persona"]
    checked = json.loads((ctx.staging / "template_check.json").read_text(encoding="utf-8"))
    assert checked["passed"] and checked["cases"] == 6 and checked["python_evaluator_equal"] == 6
    assert checked["go_equal"] == (6 if HAS_GO else None)
    assert checked["bos_added_by_ollama_only"] is False and checked["tokens_read_as_text"] == []
    assert checked["template_trims_contents"] is False
    readme = (ctx.staging / "README.md").read_text(encoding="utf-8")
    assert readme.count("ollama create tiny-persona -f Modelfile") == 2 and "Ollama 模型" in readme
    assert "Run in the export folder: ollama create tiny-persona -f Modelfile" in [str(m) for m in logged]


def test_without_saved_sampling_the_chat_defaults_are_written(ws, demo_model_dir, tmp_path, fake_gguf):
    from lora_studio.export_ollama import build_ollama

    ctx, _ = demo_context(ws, demo_model_dir, tmp_path)
    lines = build_ollama(ctx).read_text(encoding="utf-8").splitlines()
    for line in ("PARAMETER temperature 0.3", "PARAMETER top_p 0.8", "PARAMETER top_k 5",
                 "PARAMETER repeat_penalty 1.1", "PARAMETER num_predict 256", "PARAMETER seed 42"):
        assert line in lines


def test_what_ollama_would_do_differently_is_said(ws, demo_model_dir, tmp_path, fake_gguf):
    from lora_studio.export_ollama import build_ollama

    fake_gguf.update(add_bos=None, token_types={"<|endoftext|>": 3, "<|im_start|>": 1, "<|im_end|>": 3})
    ctx, logged = demo_context(ws, demo_model_dir, tmp_path)
    build_ollama(ctx)
    checked = json.loads((ctx.staging / "template_check.json").read_text(encoding="utf-8"))
    assert checked["bos_added_by_ollama_only"] is True  # key missing: Ollama adds a BOS training never had
    assert checked["tokens_read_as_text"] == ["<|im_start|>"]
    shown = [m.render("en") for m in logged]
    assert any("add_bos_token set to false" in line for line in shown)
    assert any("<|im_start|>" in line and "plain text" in line for line in shown)
    readme = (ctx.staging / "README.md").read_text(encoding="utf-8")
    assert "tokenizer.ggml.add_bos_token" in readme and "BOS 标记" in readme


def test_a_persona_the_modelfile_cannot_hold_is_refused(ws, demo_model_dir, tmp_path, fake_gguf):
    from lora_studio.export_ollama import build_ollama

    ctx, _ = demo_context(ws, demo_model_dir, tmp_path, system_prompt='她说："""走吧"""')
    with pytest.raises(ExportError) as caught:
        build_ollama(ctx)
    assert "SYSTEM" in caught.value.render("en") and "三个双引号" in caught.value.render("zh")
    assert not (ctx.staging / "Modelfile").exists()


# --- the TEMPLATE for every template family --------------------------------------------------------
@pytest.mark.parametrize("adds_bos", [False, True], ids=["gguf-adds-no-bos", "gguf-adds-bos"])
@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_renders_the_chat_templates_text(name, adds_bos, monkeypatch):
    monkeypatch.setattr(gotemplate, "go_render", lambda *a, **k: None)  # Go has its own test below
    renderer = family_renderer(name)
    glue = derive(renderer, adds_bos)
    template = go_template(glue)
    pairs = jinja_and_ollama(renderer, template, glue.bos)
    assert len(pairs) == 6
    for want, got in pairs:
        assert got == want
    result = check(template, glue, renderer, sample_conversations(USERS, ANSWERS), ["", PERSONA])
    assert result.passed and result.python_equal == result.cases == 6 and result.go_equal is None


def test_family_specifics_land_where_the_chat_template_puts_them():
    llama = derive(family_renderer("llama3-style"), adds_bos=True)
    assert llama.bos == "<|begin_of_text|>" and "<|begin_of_text|>" not in go_template(llama)
    assert llama.trims and not derive(family_renderer("chatml"), adds_bos=False).trims  # `| trim`: said, not hidden
    assert "<|begin_of_text|>" in go_template(derive(family_renderer("llama3-style"), adds_bos=False))
    gemma = derive(family_renderer("gemma-style"), adds_bos=False)  # no system role: folded into turn one
    assert gemma.system_before == "<bos><start_of_turn>user\n" and gemma.system_after == "\n\n"
    qwen3 = go_template(derive(family_renderer("qwen3-style"), adds_bos=False))
    assert qwen3.count("<think>") == 1  # only in the generation prompt: history answers carry none
    index = derive(family_renderer("index"), adds_bos=False)
    assert (index.system_before, index.system_after, index.opening) == ("<unk>", "reserved_0", "reserved_0")
    assert (index.to_answer, index.to_user, index.generation) == ("reserved_1", "</s>reserved_0", "reserved_1")


@pytest.mark.skipif(not HAS_GO, reason="Go is not installed (Debian: apt-get install golang-go)")
def test_go_text_template_renders_every_family_the_same():
    jobs, wanted = [], []
    for name in FAMILIES:
        renderer = family_renderer(name)
        for adds_bos in (False, True):
            glue = derive(renderer, adds_bos)
            pairs = jinja_and_ollama(renderer, go_template(glue), glue.bos)
            cases = [ollama_values(m, system) for system in ("", PERSONA) for m in sample_conversations(USERS, ANSWERS)]
            jobs.append((go_template(glue), cases))
            wanted.append([want[len(glue.bos):] for want, _ in pairs])
    rendered = gotemplate.go_render_many(jobs)
    assert len(rendered) == 2 * len(FAMILIES) == 14
    for (name, got), want in zip(zip([n for n in FAMILIES for _ in (0, 1)], rendered), wanted):
        assert got == want, name


def test_a_template_ollama_cannot_express_is_refused_naming_it():
    from lora_studio.templates import ChatRenderer

    numbered = ("{%- for m in messages -%}{%- if m.role == 'user' -%}"
                "{{ '<|im_start|>user ' + loop.index|string + '\n' + m.content + '<|im_end|>\n' }}"
                "{%- else -%}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif -%}"
                "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}")
    renderer = ChatRenderer(family_tokenizer(numbered, {}))
    with pytest.raises(ExportError) as caught:
        derive(renderer, adds_bos=False)
    assert renderer.tokenizer.name_or_path in caught.value.render("en")
    assert "Ollama" in caught.value.render("zh") and "chatml" in caught.value.render("en")


# --- the evaluator itself --------------------------------------------------------------------------
EXAMPLE = ('{{- /* a comment */ -}}\n{{- range $i, $m := .Messages }}\n'
           '{{- if eq .Role "system" }}[{{ .Content }}]\n{{- else if and (eq .Role "user") (eq $i 1) }}first:'
           '{{ .Content }}\n{{- else if or (eq .Role "user") (ne $i 0) }} {{ $m.Content }}{{ "\\t\\u4f60" }}'
           '\n{{- else }}?{{ end }}\n{{- end }} {{ len .Messages }} {{ .System }}{{ .Missing }}')
VALUES = {"System": "S", "Messages": [{"Role": "system", "Content": "s"}, {"Role": "user", "Content": "u1"},
                                      {"Role": "assistant", "Content": "a1"}, {"Role": "user", "Content": "u2"}]}


def test_the_evaluator_follows_go_text_template():
    expected = "[s]first:u1 a1\t你 u2\t你 4 S<no value>"
    assert gotemplate.render(EXAMPLE, VALUES) == expected
    if HAS_GO:
        assert gotemplate.go_render(EXAMPLE, [VALUES]) == [expected]
    with pytest.raises(gotemplate.GoTemplateError):
        gotemplate.render("{{ with .System }}{{ . }}{{ end }}", VALUES)
