"""Index-1.9B loaded natively (Llama + normalised head, SentencePiece tokenizer) on a tiny synthetic
checkpoint in the real layout; LoRA training and side-by-side chat on it end to end."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lora_studio.config import RunConfig
from lora_studio.errors import ModelError
from lora_studio.index_model import (INDEX_1_9B_CONFIG, is_index_config, llama_config_from_index,
                                     load_index_model, load_index_tokenizer)
from lora_studio.templates import BUILTIN_TEMPLATES, IGNORE_INDEX, ChatRenderer
from tests.index_fixture import build_index_checkpoint

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
CONVERSATION = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "你是谁？"},
                {"role": "assistant", "content": "臣妾甄嬛，家父是大理寺少卿甄远道。"}]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return build_index_checkpoint(tmp_path_factory.mktemp("index") / "Index-tiny")


@pytest.fixture(scope="module")
def tokenizer(index_dir):
    return load_index_tokenizer(index_dir)


def sentencepiece(model_dir):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))


class NormHead(torch.nn.Module):
    """Reference for Index's head: rows L2-normalised on every call, from the raw checkpoint rows."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, hidden):
        return hidden @ (self.weight / self.weight.norm(dim=1, keepdim=True)).T


# --- the checkpoint is what the tests claim it is --------------------------------------------------
def test_fixture_has_the_index_layout_with_unnormalised_head(index_dir):
    config = json.loads((index_dir / "config.json").read_text())
    assert config["model_type"] == "index" and config["norm_head"] == 1 and is_index_config(config)
    assert json.loads((index_dir / "tokenizer_config.json").read_text())["tokenizer_class"] == "IndexTokenizer"
    state = torch.load(index_dir / "pytorch_model.bin", weights_only=True)
    assert "model.layers.1.self_attn.q_proj.weight" in state and "model.layers.0.mlp.down_proj.weight" in state
    norms = state["lm_head.weight"].norm(dim=1)
    assert (norms - 1).abs().max() > 0.4  # deliberately not unit rows


def test_fixture_builds_deterministically(tmp_path):
    a, b = build_index_checkpoint(tmp_path / "a"), build_index_checkpoint(tmp_path / "b")
    for name in ("tokenizer.model", "config.json", "pytorch_model.bin"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# --- model ---------------------------------------------------------------------------------------
def test_native_logits_equal_the_index_norm_head_reference(index_dir):
    from transformers import LlamaForCausalLM

    native = load_index_model(index_dir, torch.float32).eval()
    assert type(native) is LlamaForCausalLM and not native.config.tie_word_embeddings
    assert native.lm_head.weight.data_ptr() != native.model.embed_tokens.weight.data_ptr()

    raw = torch.load(index_dir / "pytorch_model.bin", weights_only=True)
    config = json.loads((index_dir / "config.json").read_text())
    reference = LlamaForCausalLM(llama_config_from_index(config))
    reference.load_state_dict(raw, strict=True)
    reference.lm_head = NormHead(raw["lm_head.weight"].clone())
    reference.eval()

    ids = torch.tensor([[0, 335, 426, 290, 3, 335, 448, 4, 298, 100], [5, 9, 77, 400, 3, 4, 2, 1, 0, 17]])
    with torch.no_grad():
        got, want = native(input_ids=ids).logits, reference(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-5
    # Without the normalisation the logits would differ a lot: the test can tell.
    with torch.no_grad():
        plain = reference.lm_head.weight @ reference.model(input_ids=ids).last_hidden_state[0].T
    assert (plain.T - want[0]).abs().max().item() > 0.1


def test_real_index_config_maps_to_llama():
    config = llama_config_from_index(INDEX_1_9B_CONFIG)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (36, 2048, 5888)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (16, 16, 65029)
    assert config.rope_parameters["rope_theta"] == 10000.0 and config.rms_norm_eps == 1e-6
    assert config.max_position_embeddings == 4096 and not config.tie_word_embeddings


def test_weights_with_pickled_code_are_refused(index_dir, tmp_path):
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json"):
        (evil_dir / name).write_bytes((index_dir / name).read_bytes())
    marker = tmp_path / "code-ran"
    torch.save({"lm_head.weight": _Payload(str(marker))}, evil_dir / "pytorch_model.bin")
    with pytest.raises(ModelError, match="this file is a pickle that holds more than plain tensors") as raised:
        load_index_model(evil_dir, torch.float32)
    assert not marker.exists() and raised.value.where == str(evil_dir / "pytorch_model.bin")
    assert "weights_only" not in raised.value.message


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_missing_files_are_clear_errors(index_dir, tmp_path):
    (tmp_path / "config.json").write_bytes((index_dir / "config.json").read_bytes())
    with pytest.raises(ModelError, match="no weights"):
        load_index_model(tmp_path, torch.float32)
    with pytest.raises(ModelError, match="no tokenizer.model"):
        load_index_tokenizer(tmp_path)
    state = torch.load(index_dir / "pytorch_model.bin", weights_only=True)
    del state["lm_head.weight"]  # a truncated download must not become a random head
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"lack 1 tensors \(first: lm_head.weight\)"):
        load_index_model(tmp_path, torch.float32)


# --- tokenizer and template ----------------------------------------------------------------------
def test_tokenizer_has_index_special_ids_and_adds_nothing(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "reserved_0", "reserved_1")] \
        == [0, 1, 2, 3, 4]
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) \
        == (0, 1, 2, 0)
    ids = tokenizer("你好")["input_ids"]
    assert ids and 1 not in ids and 2 not in ids
    assert tokenizer.chat_template == BUILTIN_TEMPLATES["index"]


def test_any_chinese_character_encodes_through_byte_fallback(tokenizer):
    text = "龘靐齉，臣妾告退。"  # characters the tokenizer never saw
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 0 not in ids and tokenizer.decode(ids) == text


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_conversation_tokenises_as_index_pieces(tmp_path, dummy_prefix):
    """<unk>{system}reserved_0{user}reserved_1{assistant}</s>, each piece encoded alone, as bilibili does."""
    model_dir = build_index_checkpoint(tmp_path / "m", add_dummy_prefix=dummy_prefix)
    tokenizer, sp = load_index_tokenizer(model_dir), sentencepiece(model_dir)
    two_turns = [*CONVERSATION, {"role": "user", "content": "你住在哪里？"},
                 {"role": "assistant", "content": "臣妾住在碎玉轩。"}]
    ids = tokenizer.apply_chat_template(two_turns, tokenize=True, return_dict=False)
    expected = [0, *sp.encode(SYSTEM), 3, *sp.encode("你是谁？"), 4, *sp.encode(CONVERSATION[2]["content"]), 2,
                3, *sp.encode("你住在哪里？"), 4, *sp.encode("臣妾住在碎玉轩。"), 2]
    assert ids == expected
    assert sp.id_to_piece(sp.encode("你是谁？")[0]).startswith("▁") == dummy_prefix  # both cases covered
    answer = sp.encode("臣妾住在碎玉轩。")
    assert tokenizer.decode(answer) == "臣妾住在碎玉轩。"
    # A run saves the tokenizer next to its adapter; plain AutoTokenizer must read it back the same.
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert reloaded.apply_chat_template(two_turns, tokenize=True, return_dict=False) == expected


def test_chat_renderer_trains_only_the_answer_and_its_end(index_dir, tokenizer):
    renderer = ChatRenderer(tokenizer, template="auto", model_type="index")
    example = renderer.encode_example(CONVERSATION)
    answer = sentencepiece(index_dir).encode(CONVERSATION[2]["content"])
    trained = [label for label in example.labels if label != IGNORE_INDEX]
    assert trained == [*answer, 2]
    assert example.input_ids[-len(answer) - 2] == 4  # everything up to reserved_1 is prompt
    assert all(label == IGNORE_INDEX for label in example.labels[: -len(answer) - 1])
    assert 2 in renderer.stop_token_ids
    prompt = renderer.encode_prompt(CONVERSATION[1:2], system_prompt=SYSTEM)
    assert prompt == example.input_ids[: -len(answer) - 1] and prompt[-1] == 4


@pytest.mark.parametrize("consent", [False, True])
def test_models_load_takes_the_native_path_with_or_without_consent(consent, index_dir, ws):
    """Index's own code (for transformers 4.39-4.43) is never needed: consent changes nothing here."""
    from transformers import LlamaForCausalLM

    from lora_studio import models

    loaded = models.load(RunConfig(model_name_or_path=str(index_dir), dtype="float32"), ws,
                         trust_remote_code=consent)
    assert type(loaded.model) is LlamaForCausalLM and loaded.model_type == "index"
    assert loaded.renderer.chat_template == BUILTIN_TEMPLATES["index"]


# --- end to end ----------------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("LORA_STUDIO_SKIP_E2E") == "1", reason="end-to-end tests skipped")
def test_lora_training_and_side_by_side_chat_on_index(index_dir, tmp_path, ws):
    from lora_studio.chat import ChatEngine
    from lora_studio.events import Finished
    from lora_studio.sampling import SamplingConfig
    from lora_studio.training import TrainingJob

    records = [{"instruction": q, "input": "", "output": a} for q, a in [
        ("你是谁？", "臣妾甄嬛，家父是大理寺少卿甄远道。"), ("你好", "皇上万福，臣妾给皇上请安。"),
        ("你住在哪里？", "臣妾住在碎玉轩。"), ("你喜欢什么花？", "臣妾最爱倚梅园的梅花。")]]
    data_file = tmp_path / "qa.json"
    data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    config = RunConfig(model_name_or_path=str(index_dir), data_files=[str(data_file)], system_prompt=SYSTEM,
                       dtype="float32", r=16, lora_alpha=32, lora_dropout=0.0, learning_rate=1e-2,
                       per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=100,
                       lr_scheduler_type="constant", logging_steps=20, save_steps=1000, run_name="index-e2e")
    job = TrainingJob(config, ws).start()
    assert job.join(240), "training did not finish in time"
    end = job.events.last(Finished)
    assert end is not None and end.status == "completed" and end.step == 100, job.events.since(0)[-3:]

    engine = ChatEngine(ws)
    engine.load_run(job.run_dir / "adapter")
    greedy = SamplingConfig(max_new_tokens=60, temperature=0)
    for record in records:
        base, tuned = engine.answer([{"role": "user", "content": record["instruction"]}], SYSTEM, greedy)
        assert tuned == record["output"]  # exact: it also stopped at </s> instead of running on
        assert base != tuned
    # The stop really is </s>: the tuned pane ended before max_new_tokens.
    final = list(engine.compare([{"role": "user", "content": "你好"}], SYSTEM, greedy))[-1]
    assert final.done and final.stats["tuned"].tokens < 60
