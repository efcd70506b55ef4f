"""Side-by-side chat decodes both answers in one batch: each must equal decoding it alone."""

import torch

from lora_studio.chat import ChatEngine
from lora_studio.config import RunConfig
from lora_studio.sampling import SamplingConfig


def random_adapter(demo_model_dir, dest):
    """A LoRA adapter whose B matrices are random, so the tuned answer visibly differs from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(str(dest))
    return dest


def alone(engine: ChatEngine, prompt: list[int], use_adapter: bool, tokens: int) -> str:
    """Reference: transformers' own greedy generate for one answer, the base under disable_adapter()."""
    with torch.inference_mode(), engine.adapter_context(use_adapter):
        out = engine.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=tokens, do_sample=False,
                                    eos_token_id=engine.stop_token_ids, pad_token_id=engine.stop_token_ids[0])
    new = [t for t in out[0, len(prompt):].tolist() if t not in engine.stop_token_ids]
    return engine.tokenizer.decode(new, skip_special_tokens=True)


def test_both_answers_equal_decoding_each_alone(demo_model_dir, tmp_path, ws):
    engine = ChatEngine(ws)
    engine.load_base(RunConfig(model_name_or_path=str(demo_model_dir)))
    engine.set_adapter(random_adapter(demo_model_dir, tmp_path / "adapter"))
    greedy = SamplingConfig(max_new_tokens=24, temperature=0, repetition_penalty=1.0)
    for question in ("你是谁？", "皇上今日去了哪里？"):
        messages = [{"role": "user", "content": question}]
        base, tuned = engine.answer(messages, sampling=greedy)
        prompt = engine.renderer.encode_prompt(messages)
        assert base == alone(engine, prompt, False, 24)
        assert tuned == alone(engine, prompt, True, 24)
        assert base != tuned


def test_without_an_adapter_both_panes_are_the_base_model(demo_model_dir, tmp_path, ws):
    engine = ChatEngine(ws)
    engine.load_base(RunConfig(model_name_or_path=str(demo_model_dir)))
    engine.set_adapter(random_adapter(demo_model_dir, tmp_path / "adapter"))
    engine.set_adapter(None)  # attached but switched off: the tuned pane must not use it
    greedy = SamplingConfig(max_new_tokens=16, temperature=0, repetition_penalty=1.0)
    messages = [{"role": "user", "content": "你是谁？"}]
    base, tuned = engine.answer(messages, sampling=greedy)
    assert base == tuned == alone(engine, engine.renderer.encode_prompt(messages), False, 16)


def test_in_a_second_turn_each_pane_continues_its_own_conversation(demo_model_dir, tmp_path, ws):
    engine = ChatEngine(ws)
    engine.load_base(RunConfig(model_name_or_path=str(demo_model_dir)))
    engine.set_adapter(random_adapter(demo_model_dir, tmp_path / "adapter"))
    greedy = SamplingConfig(max_new_tokens=16, temperature=0, repetition_penalty=1.0)
    first = [{"role": "user", "content": "你是谁？"}]
    base_1, tuned_1 = engine.answer(first, sampling=greedy)
    follow_up = {"role": "user", "content": "皇上今日去了哪里？"}
    base_talk = first + [{"role": "assistant", "content": base_1}, follow_up]
    tuned_talk = first + [{"role": "assistant", "content": tuned_1}, follow_up]
    base_2, tuned_2 = engine.answer(tuned_talk, sampling=greedy, base_messages=base_talk)
    assert base_2 == alone(engine, engine.renderer.encode_prompt(base_talk), False, 16)
    assert tuned_2 == alone(engine, engine.renderer.encode_prompt(tuned_talk), True, 16)


def test_chat_errors_say_what_to_do_in_each_language(ws, tmp_path):
    import pytest

    from lora_studio.chat import resolve_adapter_dir
    from lora_studio.errors import ModelError

    with pytest.raises(ModelError) as caught:
        ChatEngine(ws).answer([{"role": "user", "content": "你是谁？"}])
    assert caught.value.render("en") == "chat: no base model is loaded. Load a model first."
    assert caught.value.render("zh") == "对话：还没有加载基础模型。请先加载模型。"
    with pytest.raises(ModelError) as caught:
        resolve_adapter_dir(tmp_path)
    assert caught.value.render("en").startswith(f"{tmp_path}: no adapter here. Give a run folder")
    assert caught.value.render("zh").startswith(f"{tmp_path}：这里没有适配器。")
