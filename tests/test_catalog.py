"""The model catalog: the right models with facts that hold together."""

from __future__ import annotations

import dataclasses
import re

import pytest

from lora_studio.catalog import CatalogEntry, find_entry, load_catalog
from lora_studio.config import RunConfig, Setting
from lora_studio.errors import ConfigError

CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"

# Architecture from each model's config.json: layers, hidden, q dim, kv dim, intermediate, vocab.
ARCHITECTURES = {
    "index-1.9b-chat": (36, 2048, 2048, 2048, 5888, 65029),
    "qwen2.5-0.5b-instruct": (24, 896, 896, 128, 4864, 151936),
    "qwen2.5-1.5b-instruct": (28, 1536, 1536, 256, 8960, 151936),
    "qwen3-0.6b": (28, 1024, 2048, 1024, 3072, 151936),
    "qwen3-1.7b": (28, 2048, 2048, 1024, 6144, 151936),
}
TOKENS = 4 * 384  # the Zhen Huan preset: batch 4 x cutoff_len 384


def lora_parameters(layers, hidden, q, kv, inter, r=8):
    return layers * r * ((hidden + q) + 2 * (hidden + kv) + (q + hidden) + 3 * (hidden + inter))


def estimated_memory_gb(entry: CatalogEntry) -> float:
    """The estimate catalog.yaml's header describes, recomputed."""
    layers, hidden, q, kv, inter, vocab = ARCHITECTURES[entry.key]
    total = (2 * entry.parameters + 16 * lora_parameters(layers, hidden, q, kv, inter)
             + 2 * layers * TOKENS * hidden + 2 * TOKENS * (12 * hidden + 4 * inter)
             + 12 * TOKENS * vocab + 0.5e9)
    return round(total / 1e9, 1)


def test_catalog_lists_the_supported_models():
    catalog = load_catalog()
    assert [e.modelscope_id for e in catalog] == [
        "", "IndexTeam/Index-1.9B-Chat", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
        "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"]
    assert catalog[0].key == "demo-tiny" and catalog[0].download_size_gb == 0


def test_index_entry_carries_the_facts_a_user_must_know():
    index = find_entry("IndexTeam/Index-1.9B-Chat")
    assert index.key == "index-1.9b-chat" and index.parameters_label == "2.17B"
    assert index.download_size_gb == 4.35 and not index.needs_remote_code and index.template == "index"
    assert "bilibili" in index.licence and "commercial" in index.licence and "authorisation" in index.licence
    assert index.licence_text("en") == index.licence
    assert "哔哩哔哩" in index.licence_text("zh") and "商用须获得哔哩哔哩的书面授权" in index.licence_text("zh")
    assert "pytorch_model.bin" in index.notes("en") and "pytorch_model.bin" in index.notes("zh")
    assert index.notes("en") == index.notes_en and index.notes("zh") == index.notes_zh
    # The tutorial's recorded run trained exactly this many LoRA parameters.
    assert lora_parameters(*ARCHITECTURES["index-1.9b-chat"][:5]) == 11_575_296


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_memory_estimates_follow_the_documented_formula(key):
    entry = find_entry(key)
    assert entry.train_memory_gb_bf16 == estimated_memory_gb(entry)
    # Frozen bf16 weights alone take 2 bytes a parameter; the estimate must exceed that.
    assert entry.train_memory_gb_bf16 > 2 * entry.parameters / 1e9
    assert entry.download_size_gb >= 2 * entry.parameters / 1e9 * 0.99


def test_every_entry_is_usable_by_the_studio():
    choices = next(f for f in dataclasses.fields(RunConfig) if f.name == Setting.template).metadata["choices"]
    for entry in load_catalog():
        assert entry.template in choices, entry.key
        assert entry.notes_en and entry.notes_zh and entry.licence and entry.licence_zh
        for hub_id in (entry.modelscope_id, entry.huggingface_id):
            assert hub_id == "" or hub_id.count("/") == 1, entry.key
    assert find_entry("qwen/qwen2.5-0.5b-instruct").train_memory_gb_bf16 < 6  # the preset says 6 GB GPU
    assert find_entry("no-such-model") is None


def test_a_broken_catalog_names_the_entry_and_key(tmp_path):
    good = (tmp_path / "ok.yaml")
    good.write_text(
        "models:\n  - {key: a, name: A, modelscope_id: o/a, huggingface_id: o/a, parameters: 1_000,\n"
        "     download_size_gb: 1, train_memory_gb_bf16: 2, needs_remote_code: false, template: auto,\n"
        "     licence: MIT, licence_zh: MIT, notes_en: x, notes_zh: y}\n", encoding="utf-8")
    [entry] = load_catalog(good)
    assert entry.download_size_gb == 1.0 and isinstance(entry.download_size_gb, float)
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("licence: MIT", "license: MIT"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml, model 1 \(a\).*unknown keys \['license'\]"):
        load_catalog(bad)
    bad.write_text(good.read_text().replace("parameters: 1_000", "parameters: lots"), encoding="utf-8")
    with pytest.raises(ConfigError, match="'parameters' must be int"):
        load_catalog(bad)


def test_chinese_texts_read_as_chinese_and_english_ones_as_english():
    for entry in load_catalog():
        for text in (entry.notes("zh"), entry.licence_text("zh")):
            assert re.search(f"[{CJK}]", text), entry.key
            # a line break folded by YAML would leave a space between two characters
            assert not re.search(f"[{CJK}] [{CJK}]", text), text
        for text in (entry.notes("en"), entry.licence_text("en"), entry.name):
            assert not re.search(f"[{CJK}]", text), text


def test_a_catalog_error_reads_in_chinese(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - just text\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalog(bad)
    assert caught.value.render("zh") == f"{bad}，第 1 个模型（?）：每一项必须是“键: 值”的映射。"
    assert caught.value.render("en") == f"{bad}, model 1 (?): an entry must be a mapping of keys to values."
