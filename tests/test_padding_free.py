"""Padding-free batches: exact per-example attention, the same loss as padding, and a logged fallback."""

import random

import pytest
import torch

from lora_studio.config import RunConfig
from lora_studio.recipe import make_collator, training_arguments

from .conftest import QWEN_TOKENIZER

VOCAB = 300


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                         attn_implementation="sdpa")  # use_cache stays at its default, True: the pitfall
    return LlamaForCausalLM(config)


def pad_tokenizer():
    """A real tokenizer for the padding collator, padding with an id the tiny vocabulary has."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    tok.pad_token = tok.convert_ids_to_tokens(0)
    return tok


def examples(count: int, seed: int = 0) -> list[dict]:
    """Examples of uneven lengths, a prompt masked out of the labels as the studio's encoding does."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(5, 40))]
        prompt = rng.randrange(1, len(ids) - 1)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def test_flattened_batch_gives_each_example_its_own_logits():
    model = tiny_llama()
    logs = []
    collator = make_collator(RunConfig(padding_free=True), model, None, logs.append)
    rows = examples(4)
    batch = collator(rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch and logs == []
    model.train()  # what the Trainer does; with a cache this is where examples leaked into each other
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for row in rows:
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            part = packed[start:start + len(row["input_ids"])]
            assert torch.allclose(part, alone, atol=1e-5), (part - alone).abs().max()
            start += len(row["input_ids"])
    assert collator.tokens == sum(len(r["input_ids"]) for r in rows)


def first_losses(padding_free: bool, tmp_path, steps: int = 3) -> list[float]:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback

    config = RunConfig(padding_free=padding_free, lora_dropout=0.0, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2, max_steps=steps, logging_steps=1, save_steps=1000,
                       learning_rate=1e-2, seed=3)
    model = get_peft_model(tiny_llama(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                    target_modules=["q_proj", "v_proj", "down_proj"]))
    losses = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if "loss" in (logs or {}):
                losses.append(logs["loss"])

    collator = make_collator(config, model, pad_tokenizer(), lambda message: None)
    trainer = Trainer(model=model, args=training_arguments(config, tmp_path / str(padding_free), False, False),
                      train_dataset=Dataset.from_list(examples(40, seed=1)), data_collator=collator,
                      callbacks=[Losses()])
    trainer.train()
    return losses


def test_padding_free_learns_exactly_what_padding_learns(tmp_path):
    packed, padded = first_losses(True, tmp_path), first_losses(False, tmp_path)
    assert len(packed) == len(padded) == 3
    assert packed == pytest.approx(padded, abs=1e-4)
    assert packed[-1] != pytest.approx(packed[0], abs=1e-3)  # the steps did train something


def test_model_running_its_own_code_falls_back_to_padding_with_a_reason():
    from transformers import DataCollatorForSeq2Seq, LlamaForCausalLM

    class RemoteCodeModel(LlamaForCausalLM):  # defined outside transformers.models, like remote code
        pass

    model = RemoteCodeModel(tiny_llama().config)
    logs = []
    collator = make_collator(RunConfig(padding_free=True), model, pad_tokenizer(), logs.append)
    assert isinstance(collator.inner, DataCollatorForSeq2Seq)
    assert [line.render("en") for line in logs] == [
        "Padding-free batches are off: RemoteCodeModel runs its own code, which may not separate packed "
        "examples; padding each batch instead."]
    assert logs[0].render("zh") == "无填充批处理已关闭：RemoteCodeModel 运行模型自带的代码，可能无法分开拼接在一起的样本；改为逐批填充。"
    batch = collator(examples(3))
    assert batch["input_ids"].shape[0] == 3 and "attention_mask" in batch
