"""The chat tab's extras: adapter strength, conversation export, probe buttons, the blind A/B flow."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from lora_studio import ab
from lora_studio.chat import ChatEngine
from lora_studio.config import RunConfig, save_yaml
from lora_studio.errors import ConfigError
from lora_studio.sampling import SamplingConfig

from .test_chat_batched import alone, random_adapter

GREEDY = SamplingConfig(max_new_tokens=20, temperature=0, repetition_penalty=1.0)
GREEDY_KW = dict(max_new_tokens=20, temperature=0, repetition_penalty=1.0)  # the tab's sampling, by name
QUESTION = [{"role": "user", "content": "你是谁？"}]
SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 1-layer model with the demo tokenizer recipe, never trained: built in a fraction of a second."""
    from .tiny_model_fixture import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("chat-extras") / "tiny")


@pytest.fixture(scope="session")
def adapters(tiny_model_dir, tmp_path_factory):
    """Two LoRA adapters of the tiny model with random B matrices (their answers differ from the base's)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("adapters")
    first = random_adapter(tiny_model_dir, folder / "first")
    second = Path(shutil.copytree(first, folder / "second"))
    weights = load_file(second / "adapter_model.safetensors")
    save_file({name: -tensor if "lora_B" in name else tensor for name, tensor in weights.items()},
              second / "adapter_model.safetensors")  # the opposite update
    return first, second


@pytest.fixture
def engine(ws, tiny_model_dir, adapters):
    engine = ChatEngine(ws)
    engine.load_base(RunConfig(model_name_or_path=str(tiny_model_dir)))
    engine.set_adapter(adapters[0])
    return engine


def lora_scalings(engine) -> dict:
    from peft.tuners.lora import LoraLayer

    return {(name, adapter): value for name, layer in engine.model.named_modules() if isinstance(layer, LoraLayer)
            for adapter, value in layer.scaling.items()}


# --- adapter strength --------------------------------------------------------------------------------
def test_strength_zero_is_the_base_one_the_adapter_and_half_neither(engine, monkeypatch):
    from lora_studio import models

    loads = []
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(a) or pytest.fail("reloaded"))
    model, scalings = engine.model, lora_scalings(engine)
    prompt = engine.renderer.encode_prompt(QUESTION)
    base, tuned = engine.answer(QUESTION, sampling=GREEDY)
    assert base == alone(engine, prompt, False, 20) and tuned == alone(engine, prompt, True, 20) and base != tuned
    zero = list(engine.compare(QUESTION, sampling=GREEDY, strength=0.0))[-1]
    assert (zero.base, zero.tuned) == (base, base)  # the tuned pane says exactly what the base pane says
    assert zero.ids["tuned"] == zero.ids["base"] and len(zero.ids["base"]) > 0  # token for token
    half = engine.answer(QUESTION, sampling=GREEDY, strength=0.5)
    assert half[0] == base and half[1] not in (base, tuned)
    strong = engine.answer(QUESTION, sampling=GREEDY, strength=1.5)
    assert strong[0] == base and strong[1] != tuned  # the base row of the mixed batch never sees the strength
    assert engine.answer(QUESTION, sampling=GREEDY, strength=1.0) == (base, tuned)
    assert engine.model is model and loads == [] and lora_scalings(engine) == scalings  # restored exactly


def test_each_adapter_keeps_its_own_scaling_and_a_closed_stream_restores_it(engine, adapters):
    first = engine.answer(QUESTION, sampling=GREEDY)
    engine.set_adapter(adapters[1])
    second = engine.answer(QUESTION, sampling=GREEDY)
    scalings = lora_scalings(engine)
    stream = engine.compare(QUESTION, sampling=GREEDY, strength=0.25)
    next(stream)
    stream.close()  # the page went away mid-answer
    assert lora_scalings(engine) == scalings
    engine.answer(QUESTION, sampling=GREEDY, strength=1.5)
    assert engine.answer(QUESTION, sampling=GREEDY) == second
    engine.set_adapter(adapters[0])
    assert engine.answer(QUESTION, sampling=GREEDY) == first and first != second


def test_a_strength_outside_the_range_is_a_readable_error(engine):
    for bad in (-0.1, 1.6, float("nan"), "strong"):
        with pytest.raises(ConfigError) as error:
            engine.answer(QUESTION, sampling=GREEDY, strength=bad)
        assert "is outside 0.0 to 1.5" in error.value.render("en")
    assert "不在 0.0 到 1.5 之间" in error.value.render("zh")


# --- the chat tab, driven through its handlers ------------------------------------------------------
@pytest.fixture
def tab(ws, tiny_model_dir, adapters):
    """The chat tab over a workspace with one run `persona` (the first random adapter, three probes)."""
    import gradio as gr

    from lora_studio.ui import tab_chat
    from lora_studio.ui.i18n import Labels
    from lora_studio.ui.state import Studio

    shutil.copytree(tiny_model_dir, ws.models / "tiny-chat")
    run = ws.runs / "persona"
    shutil.copytree(adapters[0], run / "adapter")
    save_yaml(RunConfig(model_name_or_path="tiny-chat", run_name="persona", probe_prompts=["问一", "问二", "问三"]),
              run / "config.yaml")
    studio = Studio(ws, lang="en")
    with gr.Blocks():
        ui = tab_chat.build(studio, Labels("en"))
        tab_chat.wire(studio, ui, gr.Checkbox(False))
    return studio, ui, str(run / "adapter")


def send(ui, session, adapter, message, panes=([], [])):
    outputs = list(ui.handlers.send(message, adapter, "", SYSTEM, *panes, session, None, **GREEDY_KW))
    return outputs[-1]


def value(update):
    return update["value"] if isinstance(update, dict) else update


def reference(studio, messages) -> tuple[str, str]:
    """Both greedy answers to a conversation, straight from the engine."""
    return studio.chat.answer(messages, SYSTEM, GREEDY)


def test_probe_buttons_follow_the_chosen_runs_probe_set(tab):
    from lora_studio.config import DEFAULT_PROBES
    from lora_studio.ui.chat_extras import ChatSession

    studio, ui, adapter = tab
    assert [b.value for b in ui.probes] == list(DEFAULT_PROBES)  # before a run is chosen
    *buttons, _tally, _session = ui.handlers.adapter(adapter, ChatSession(), None)
    assert [(b["value"], b["visible"]) for b in buttons[:3]] == [("问一", True), ("问二", True), ("问三", True)]
    assert [b["visible"] for b in buttons[3:]] == [False, False, False]
    (Path(adapter).parent / "probes.txt").write_text("改过的问题\n", encoding="utf-8")  # edited in the studio
    *buttons, _tally, _session = ui.handlers.adapter(adapter, ChatSession(), None)
    assert [b.get("value") for b in buttons if b["visible"]] == ["改过的问题"]
    *buttons, _tally, _session = ui.handlers.adapter(None, ChatSession(), None)
    assert [b["value"] for b in buttons] == list(DEFAULT_PROBES)


def test_the_strength_slider_answers_the_last_question_again(tab):
    from lora_studio.ui.chat_extras import ChatSession

    studio, ui, adapter = tab
    session = ChatSession()
    _, base, tuned, _ = send(ui, session, adapter, "你是谁？")
    model = studio.chat.model
    outputs = list(ui.handlers.strength(0.0, adapter, "", SYSTEM, base, tuned, session, None, **GREEDY_KW))
    _keep, base0, tuned0, _ = outputs[-1]
    assert len(tuned0) == 2 and tuned0[-1]["content"] == base0[-1]["content"] == base[-1]["content"]
    assert tuned[-1]["content"] != base[-1]["content"]
    outputs = list(ui.handlers.strength(1.0, adapter, "", SYSTEM, base0, tuned0, session, None, **GREEDY_KW))
    assert outputs[-1][2] == tuned and session.strength == 1.0 and studio.chat.model is model


def test_a_conversation_exports_as_markdown_and_json(tab):
    from lora_studio.ui.chat_extras import ChatSession

    studio, ui, adapter = tab
    session = ChatSession()
    _, base, tuned, _ = send(ui, session, adapter, "你是谁？")
    _, base, tuned, _ = send(ui, session, adapter, "你好", (base, tuned))
    as_json = Path(ui.handlers.export("json")(base, tuned, adapter, "", SYSTEM, session, None, **GREEDY_KW))
    as_md = Path(ui.handlers.export("md")(base, tuned, adapter, "", SYSTEM, session, None, **GREEDY_KW))
    for file in (as_json, as_md):
        assert Path(tempfile.gettempdir()) in file.parents and file.is_file()
        assert [p.name for p in file.parent.iterdir()] == [file.name]  # whole: no temporary file left
    record = json.loads(as_json.read_text(encoding="utf-8"))
    assert record["format"] == "lora-studio-conversation" and record["version"] == 1
    assert record["adapter"] == {"run": "persona", "checkpoint": "adapter", "path": adapter, "strength": 1.0}
    assert record["model"] == "tiny-chat" and record["system_prompt"] == SYSTEM
    assert record["sampling"] == SamplingConfig(**GREEDY_KW).to_dict()
    assert [m["content"] for m in record["panes"]["tuned"]] == [m["content"] for m in tuned]
    assert [m["content"] for m in record["panes"]["base"]] == [m["content"] for m in base]
    users = [m for m in record["panes"]["base"] if m["role"] == "user"]
    assert [m["content"] for m in users] == ["你是谁？", "你好"] and all(m["time"][:2] == "20" for m in users)
    assert record["exported_at"] >= users[-1]["time"]
    text = as_md.read_text(encoding="utf-8")
    assert text.startswith("# Conversation\n") and "## Base model" in text and "## Fine-tuned" in text
    assert "- **Adapter**: persona / adapter (strength 1)" in text and f"- **System prompt**: {SYSTEM}" in text
    assert "temperature=0" in text and f"> {tuned[1]['content'].splitlines()[0]}" in text
    assert text.index("## Base model") < text.index(f"> {base[1]['content'].splitlines()[0]}") < text.index(
        "## Fine-tuned")
    from lora_studio.conversation import Conversation, to_markdown

    zh = to_markdown(Conversation(base=base, tuned=tuned, adapter=adapter), "zh")
    assert zh.startswith("# 对话记录\n") and "## 基础模型" in zh and "## 微调后" in zh and "**用户**" in zh


def test_the_blind_flow_shuffles_reveals_and_counts_every_vote(tab, monkeypatch):
    from lora_studio.ui.chat_extras import ChatSession

    import gradio as gr

    studio, ui, adapter = tab
    told = []
    monkeypatch.setattr(gr, "Info", told.append)
    session = ChatSession(seed=5)
    first = send(ui, session, adapter, "你是谁？")
    base_pane, tuned_pane = first[1], first[2]
    left, right, votes_row, status, tally = ui.handlers.blind(True, adapter, base_pane, tuned_pane, session, None)[:5]
    assert votes_row["visible"] and left["label"] == "Answer A" and right["label"] == "Answer B"
    assert "Blind votes for **persona / adapter**: fine-tuned won 0 · base won 0 · ties 0 (0 votes" in tally
    expected, sides, questions = {"tuned": 0, "base": 0, "tie": 0}, set(), ["你好", "皇上最近可好？", "你的父亲是谁？"] * 3
    talk = list(tuned_pane)  # the tuned model's own conversation goes on underneath
    for number, question in enumerate(questions):
        _, left, right, _ = send(ui, session, adapter, question)
        shown_left, shown_right = value(left), value(right)
        assert [m["content"] for m in shown_left][0] == question and len(shown_left) == len(shown_right) == 2
        assert left["label"] == "Answer A"
        tuned_now = session.tuned[-1]["content"]
        left_is_tuned = shown_left[1]["content"] == tuned_now
        assert left_is_tuned == session.rounds.current.left_is_tuned
        sides.add(left_is_tuned)
        choice = ("left", "right", "tie")[number % 3]
        expected[ab.winner(left_is_tuned, choice)] += 1
        left_label, right_label, status, tally, _ = ui.handlers.vote(choice)(adapter, session, None)
        side = "fine-tuned" if left_is_tuned else "base"
        assert f'"{question}": A was the {side} model' in status
        assert left_label["label"].startswith("Answer A (")
        told.clear()
        refused = ui.handlers.vote("left")(adapter, session, None)
        assert refused[:3] == (gr.update(),) * 3  # the panes and the revealed sides stay as they are
        assert told == [f'blind A/B: "{question}" already has your vote. Each question gets one vote: send the next one.']
    assert sides == {True, False}
    votes = ab.tally(Path(adapter).parent)
    assert votes == ab.Tally(tuned=expected["tuned"], base=expected["base"], ties=expected["tie"], total=9)
    assert f"fine-tuned won {votes.tuned} · base won {votes.base} · ties {votes.ties} (9 votes" in tally
    lines = ab.read_votes(Path(adapter).parent)
    assert {(v["adapter"], v["strength"]) for v in lines} == {("adapter", 1.0)}
    assert [v["prompt"] for v in lines] == questions
    # the true conversations went on underneath; switching blind off shows them again
    left, right, votes_row, status, tally = ui.handlers.blind(False, adapter, [], [], session, None)[:5]
    assert not votes_row["visible"] and left["label"] == "Base model" and right["label"] == "Fine-tuned"
    assert [m["content"] for m in value(right) if m["role"] == "user"] == ["你是谁？", *questions]
    assert value(right)[:2] == talk[:2]
    expected_tuned = reference(studio, value(right)[:-1])[1]
    assert value(right)[-1]["content"] == expected_tuned  # each pane answered in its own conversation


def test_blind_votes_without_a_run_folder_are_revealed_but_not_kept(tab, adapters, ws):
    from lora_studio.ui.chat_extras import ChatSession

    studio, ui, _ = tab
    loose = ws.root / "loose-adapter"  # inside the workspace, but in no run folder
    shutil.copytree(adapters[0], loose)
    session = ChatSession(seed=2)
    ui.handlers.blind(True, str(loose), [], [], session, None)
    with pytest.raises(Exception) as error:  # no run config: the model cannot be known either
        send(ui, session, str(loose), "你是谁？")
    assert "no run config.yaml" in str(error.value)
    assert "votes cannot be kept" in ui.handlers.adapter(str(loose), session, None)[-2]
    session.rounds.start("你是谁？")
    session.rounds.finish(base="b", tuned="t")
    _, _, status, _, _ = ui.handlers.vote("tie")(str(loose), session, None)
    assert "You called it a tie." in status and "votes cannot be kept" in status
    assert not (loose / ab.VOTES_FILE).exists()
