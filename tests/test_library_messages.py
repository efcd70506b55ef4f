"""The library's messages (data, templates, models, chat, catalog) in Chinese and English.

A Chinese user reads no English words of ours: names stay as they are (files, keys, commands, ids,
roles) and so do terms such as JSON or token, but every word around them is Chinese. The checks
replace every name a message was given by "X" first, so what is left is our own text.
"""

from __future__ import annotations

import re
import string

import pytest

from lora_studio import data, i18n
from lora_studio.errors import DataError
from lora_studio.i18n import Msg

from .test_data import BAD_FILES, CHAT_OK, write

AREAS = ("data", "templates", "models", "chat", "catalog", "export", "gguf", "ollama", "space", "evaluation",
         "demo", "compare", "launch", "hardware", "monitor", "export_ui")
# Terms and names that stay in English in a Chinese text.
ALLOWED = {"JSON", "Lines", "UTF", "GBK", "CSV", "Excel", "Parquet", "pandas", "BPE", "Llama", "Python",
           "SentencePiece", "ShareGPT", "token", "alpaca", "Index", "Qwen", "LoRA", "ID", "M", "P", "null",
           "true", "system", "user", "human", "assistant", "gpt", "history", "X",
           "A", "B",  # the blind comparison's two panes
           # export, evaluation and scale-out: formats, tools, packages, option values and command words
           "GGUF", "gguf", "Ollama", "ollama", "Space", "Spaces", "space", "Modelfile", "TEMPLATE", "BOS", "Go",
           "LoRA", "Studio", "Hugging", "Face", "ModelScope", "PyPI", "Gradio", "README", "NVIDIA", "GPU", "CPU",
           "MB", "GiB", "YAML", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors",
           "AutoModelForCausalLM", "QLoRA", "NF", "bit", "f", "bf", "float", "chrF", "DDP", "C", "cmake",
           "TensorBoard", "SwanLab", "MLflow", "Trackio", "wandb", "sync", "hf", "git", "clone", "sh", "sha",
           "merged", "none", "all", "best", "adapter", "index", "chatml", "toggle", "false", "config",
           "hub", "id", "host", "port", "auth", "login", "guest"}
# a bilingual model card's section headings name their language in that language
OTHER_LANGUAGE_ON_PURPOSE = frozenset({"export.card_english", "export.card_chinese"})
NAME = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`|python studio\.py \w+|pip install|\S*[./_=\\-]\S*")
WORD = re.compile(r"[A-Za-z]+")
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def english_words(text: str) -> set[str]:
    """ASCII words in `text` that are neither names nor allowed terms."""
    return set(WORD.findall(NAME.sub(" ", text))) - ALLOWED


def names_hidden(value):
    """`value` with every plain parameter (a name: a path, a key, Python's own text) replaced by X."""
    if isinstance(value, Msg):
        return type(value)(value.key, {k: names_hidden(v) for k, v in value.params.items()})
    if isinstance(value, (list, tuple)):
        return [names_hidden(v) for v in value]
    return value if isinstance(value, (int, float)) else "X"


def our_keys():
    return [key for key in i18n.CATALOGUE if key.split(".")[0] in AREAS and key not in OTHER_LANGUAGE_ON_PURPOSE]


def filled(key: str, lang: str) -> str:
    """The text of `key` with every field filled in: numbers where a format needs one, else X."""
    fields = {name: 1 if spec else "X" for _, name, spec, _ in string.Formatter().parse(i18n.entry(key)[lang])
              if name}
    return i18n.text(key, lang, **fields)


@pytest.mark.parametrize("key", our_keys())
def test_each_message_reads_as_chinese_and_as_english(key):
    zh, en = (i18n.entry(key)[lang] for lang in ("zh", "en"))
    fields = [{name for _, name, _, _ in string.Formatter().parse(text) if name} for text in (zh, en)]
    assert fields[0] == fields[1], "both languages take the same parameters"
    assert not english_words(filled(key, "zh")), filled(key, "zh")
    assert not CJK.search(filled(key, "en")), "an English reader sees no Chinese of ours"


@pytest.mark.parametrize("name,content,expected", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_a_data_error_renders_in_chinese_without_english_words_of_ours(tmp_path, name, content, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        data.load_records(path)
    shown = names_hidden(caught.value.to_msg()).render("zh")
    assert not english_words(shown), shown
    assert caught.value.render("zh").startswith(str(path))  # the file is named first, as it is


def test_a_data_error_names_the_record_and_field_in_each_language(tmp_path):
    path = write(tmp_path, "n.json", '[{"instruction": "x", "output": 5}]')
    error = _error(lambda: data.load_records(path))
    assert error.render("en").startswith(f"{path}, record 1 (line 1), field 'output': "
                                         "must be a string, not a number. Put the text in double quotes.")
    assert error.render("zh").startswith(f"{path}，第 1 条记录（第 1 行），字段 'output'："
                                         "必须是字符串，而不是数字。请用双引号把文本括起来。")
    error = _error(lambda: data.load_records(write(tmp_path, "c.jsonl", CHAT_OK), "alpaca"))
    assert "这条记录是 messages 格式，但 data_format 设置为 'alpaca'" in error.render("zh")


def test_setting_errors_name_the_setting(tmp_path):
    error = _error(lambda: data.load_files([]))
    assert error.where == "data_files" and error.render("zh").startswith("data_files：没有指定数据文件。")
    error = _error(lambda: data.split([], 1.5, seed=1))
    assert error.render("en") == ("val_size: val_size 1.5 is not a fraction below 1. Use a value such as 0.1 "
                                  "(10% for validation), or 0 for none.")


def test_the_dataset_report_in_chinese(tmp_path):
    ok = '{"instruction": "你好", "input": "", "output": "皇上万福。"}'
    records = data.load_records(write(tmp_path, "r.jsonl", "\n".join([ok, ok, '{"instruction": " 早 ", "output": "早。"}'])))
    report = data.dataset_report(records, cutoff_len=4)
    text = report.to_text("zh")
    assert text.splitlines()[:2] == ["记录数：3", "完全重复：1 条，分为 1 组（dedupe=true 时训练前会去掉）"]
    assert "  第 1 条 ×2：「你好」" in text and "首尾有空白：1 条（第 3 条）" in text
    assert "超过 cutoff_len 4：3 条（按字符计，token 数可能不同）" in text
    for line in report.lines():
        assert not english_words(names_hidden(line).render("zh")), line.render("zh")


def _error(action) -> DataError:
    with pytest.raises(DataError) as caught:
        action()
    return caught.value
