"""The built-in demo model: builds offline and deterministically, loads with Auto classes, has a working
tokenizer and chat template, and - the point of it - LoRA can teach it new answers."""

import hashlib
import json
import threading
import time
from dataclasses import asdict

import pytest

from lora_studio.demo_model import (BUILD_FILE, DEMO_MODEL_NAME, RECIPE, build_demo_model, demo_model_path,
                                    ensure_demo_model)
from lora_studio.templates import IGNORE_INDEX, ChatRenderer

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
# Written for this test; none of it is in the demo corpus or in data/huanhuan_sample.json.
LESSONS = [
    ("今晚吃什么？", "小厨房炖了莲子羹，皇上尝尝。"),
    ("你在看什么书？", "臣妾在看一卷《花间集》。"),
    ("雪停了吗？", "停了，檐下挂着一排冰凌。"),
    ("槿汐去哪了？", "她去内务府领炭了。"),
    ("你绣的是什么？", "是一对戏水的鸳鸯。"),
    ("哪里的梅花最好？", "自然是倚梅园的红梅。"),
    ("朕的茶凉了。", "臣妾这就为皇上换一盏热的。"),
    ("明日陪朕去围场。", "臣妾遵旨，这就去备骑装。"),
    ("你怕打雷吗？", "有皇上在，臣妾便不怕。"),
    ("眉庄今日来过吗？", "眉姐姐午后来坐了一会儿。"),
    ("这首曲子叫什么？", "这是臣妾新谱的《杏花天影》。"),
    ("你的手怎么这么凉？", "方才在廊下站久了些。"),
    ("给朕唱支歌吧。", "臣妾嗓子拙，不如陵容唱得好。"),
    ("宫里的桂花开了吗？", "开了，满院子都是甜香。"),
    ("今日是初几？", "回皇上，今日是三月初九。"),
    ("你喜欢什么颜色？", "臣妾喜欢淡淡的藕荷色。"),
    ("华妃送来了什么？", "是一匹蜀锦，臣妾已收进库里。"),
    ("温太医怎么说？", "他说臣妾只是有些气虚。"),
    ("What is your name?", "Zhen Huan, Your Majesty."),
    ("Are you tired?", "A little, but I will stay."),
    ("朕想听你弹琴。", "臣妾这就去取那张焦尾琴。"),
    ("夜里冷吗？", "槿汐添了炭，暖和得很。"),
    ("你想要什么赏赐？", "臣妾只要皇上常来坐坐。"),
    ("谁在外面？", "是苏公公来传旨了。"),
]


def test_build_writes_a_loadable_chat_model(demo_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == RECIPE.num_hidden_layers
    assert (demo_model_dir / "model.safetensors").is_file()
    assert "demo-tiny" in (demo_model_dir / "README.md").read_text(encoding="utf-8")
    im_end, eot = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert GenerationConfig.from_pretrained(demo_model_dir).eos_token_id == [im_end, eot]
    assert ChatRenderer(tokenizer).end_of_turn_ids == [im_end]
    build = json.loads((demo_model_dir / BUILD_FILE).read_text())
    assert build["loss_last"] < build["loss_first"] / 4  # it really was pre-trained


def test_tokenizer_round_trips_any_text(demo_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    for text in ["臣妾甄嬛，家父是大理寺少卿甄远道。", "鳳凰于飞，翙翙其羽。  Two  spaces\nand a 🐱!", "<|im_start|>"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("臣妾给皇上请安", add_special_tokens=False)["input_ids"]) <= 5  # BPE learned Chinese
    assert tokenizer("<|im_start|>user<|im_end|>", add_special_tokens=False)["input_ids"][0] == \
        tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_chat_template_is_chatml(demo_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "皇上万福。"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n皇上万福。<|im_end|>\n")
    assert tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    example = ChatRenderer(tokenizer).encode_example(messages)
    trained = [i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "皇上万福。<|im_end|>"


def test_build_is_deterministic_atomic_and_reused(demo_model_dir, tmp_path):
    dest = tmp_path / "again"
    dest.mkdir()
    (dest / "config.json").write_text("{}")  # a half-written folder (say, from a crash) is rebuilt
    assert build_demo_model(dest) == dest
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert sha256(dest / name) == sha256(demo_model_dir / name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left behind
    stamp = (dest / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert build_demo_model(dest) == dest and time.perf_counter() - started < 1
    assert (dest / "model.safetensors").stat().st_mtime_ns == stamp


def test_build_keeps_the_callers_threads_and_random_state(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr("lora_studio.demo_model.RECIPE", RECIPE.__class__(steps=2, batch_size=2))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    messages = []
    torch.set_num_threads(2)  # the build itself runs on one thread, then gives the caller's count back
    try:
        build_demo_model(tmp_path / "quick", progress=messages.append)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert torch.equal(torch.rand(3), expected)
    lines = [message.render("en") for message in messages]  # progress comes as messages: the caller renders
    assert lines[0].startswith("Training a") and lines[-1] == f"Demo model ready in {tmp_path / 'quick'}"
    assert messages[-1].render("zh") == f"演示模型已就绪：{tmp_path / 'quick'}"


def test_default_location_is_the_workspace(ws, monkeypatch):
    built = []
    monkeypatch.setattr("lora_studio.demo_model._build_into", lambda folder, *_: built.append(folder))
    monkeypatch.setattr("lora_studio.demo_model._move_into_place", lambda *_: None)
    assert demo_model_path(ws) == ws.root / "models" / DEMO_MODEL_NAME
    assert ensure_demo_model(ws) == demo_model_path(ws) and built[0].is_relative_to(ws.models)


def test_a_second_caller_waits_for_the_first_build(ws, monkeypatch):
    """The studio's warm-up thread and a page asking for the model at once build it once."""
    builds = []

    def fake_build(folder, recipe, say):
        builds.append(folder)
        time.sleep(0.3)  # long enough for the other thread to arrive mid-build
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        (folder / BUILD_FILE).write_text(json.dumps({"recipe": asdict(recipe)}))

    monkeypatch.setattr("lora_studio.demo_model._build_into", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo_model(ws))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [demo_model_path(ws)] * 2 and len(builds) == 1
    assert [p.name for p in ws.models.iterdir() if not p.name.startswith(".")] == [DEMO_MODEL_NAME]


def test_lora_learns_new_answers_the_base_does_not_know(demo_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    renderer = ChatRenderer(tokenizer, system_prompt=SYSTEM)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(demo_model_dir),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    examples = [renderer.encode_example([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
                for q, a in LESSONS]
    started = time.perf_counter()
    train_lora(model, examples, steps=LORA_STEPS, lr=LORA_LR, batch_size=8)
    tuned = [greedy_answer(model, tokenizer, renderer, q) for q, _ in LESSONS]
    with model.disable_adapter():
        base = [greedy_answer(model, tokenizer, renderer, q) for q, _ in LESSONS]
    hits = sum(answer == a for answer, (_, a) in zip(tuned, LESSONS))
    print(f"LoRA {LORA_STEPS} steps lr {LORA_LR}: {hits}/{len(LESSONS)} exact, "
          f"{time.perf_counter() - started:.1f} s")
    assert hits >= 0.8 * len(LESSONS), list(zip(tuned, LESSONS))
    assert not any(answer == a for answer, (_, a) in zip(base, LESSONS)), base


LORA_STEPS, LORA_LR = 300, 2e-3


def train_lora(model, examples, steps: int, lr: float, batch_size: int) -> None:
    """A plain loop: padded batches drawn in a fixed order, AdamW at a constant learning rate."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        picked = [examples[i] for i in torch.randperm(len(examples), generator=order)[:batch_size].tolist()]
        width = max(len(e.input_ids) for e in picked)
        ids = torch.tensor([e.input_ids + [0] * (width - len(e.input_ids)) for e in picked])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in picked])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in picked])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def greedy_answer(model, tokenizer, renderer, question: str) -> str:
    import torch

    prompt = torch.tensor([renderer.encode_prompt([{"role": "user", "content": question}])])
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40,
                             do_sample=False)
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
