"""Character scripts in (role cards with dialogue lines), CSV / TSV / Parquet tables, and the doctor's turns.

Unit tests need no model; one end-to-end test renders scripts with the demo model's chat template and
checks that only the role's lines are trained.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from lora_studio import data
from lora_studio.config import RunConfig
from lora_studio.data_table import table_columns
from lora_studio.errors import DataError

from .conftest import ROOT

HERE = Path(__file__).parent / "data"
SCENES_JSON, SCENES_CSV = HERE / "script_scenes.json", HERE / "script_scenes.csv"
QA_JSON, QA_CSV = HERE / "qa_table.json", HERE / "qa_table.csv"
SAMPLE = ROOT / "data" / "zhenhuan_script_sample.json"

# tests/data/script_scenes.json as conversations: the first with one other speaker (names dropped, the
# role's opening line and the unanswered last line left out), the second with two others and narration
PAIR = [
    {"role": "system", "content": "你是甄嬛，碎玉轩的莞常在。"},
    {"role": "user", "content": "你还没睡？"},
    {"role": "assistant", "content": "臣妾在等皇上。\n炉上温着酒。"},
    {"role": "user", "content": "那便陪你饮一杯。"},
    {"role": "assistant", "content": "谢皇上。"},
]
GROUP = [
    {"role": "user", "content": "（翊坤宫，众妃请安）\n华妃：莞贵人来得倒早。\n曹贵人: 妹妹向来守礼。"},
    {"role": "assistant", "content": "（低声）娘娘万福。"},
    {"role": "user", "content": "华妃：起来吧。"},
    {"role": "assistant", "content": "谢娘娘。"},
]


def write(folder: Path, name: str, content) -> Path:
    path = folder / name
    if isinstance(content, (list, dict)):
        content = json.dumps(content, ensure_ascii=False)
    path.write_text(content, encoding="utf-8")
    return path


def script(*lines, role="甄嬛", info="") -> dict:
    return {"role_name": role, "role_info": info, "dialog": list(lines)}


def conversation(tmp_path, record) -> list[dict]:
    [loaded] = data.load_records(write(tmp_path, "one.jsonl", json.dumps(record, ensure_ascii=False)))
    return loaded.messages


# --- scripts to conversations ----------------------------------------------------------------------
def test_a_script_with_one_other_speaker_drops_the_names():
    first, _ = data.load_records(SCENES_JSON)
    assert first.messages == PAIR
    assert (first.speakers, first.left_out) == (2, (0, 6))  # "今夜月色真好" before anyone spoke; the goodbye


def test_a_script_with_two_other_speakers_keeps_their_names():
    _, second = data.load_records(SCENES_JSON)
    assert second.messages == GROUP  # narration as written, an ASCII colon kept, a direction in the words
    assert (second.speakers, second.left_out) == (3, ())


def test_separators_merging_and_the_role_card(tmp_path):
    record = script("皇上:起来吧。", "皇上：坐。", "甄嬛:谢皇上。", info="你是甄嬛。")
    assert conversation(tmp_path, record) == [{"role": "system", "content": "你是甄嬛。"},
                                              {"role": "user", "content": "起来吧。\n坐。"},
                                              {"role": "assistant", "content": "谢皇上。"}]
    # a long head before a colon is a sentence, not a name: narration, and the names stay
    said = "皇上看着窗外的梅花轻声说道了一句话："
    record = script(f"{said}好。", "皇上：你来了。", "甄嬛：是。")
    assert conversation(tmp_path, record)[0] == {"role": "user", "content": f"{said}好。\n皇上：你来了。"}


def test_csv_script_is_the_same_as_the_json_script():
    from_json, from_csv = data.load_records(SCENES_JSON), data.load_records(SCENES_CSV)
    assert [r.messages for r in from_csv] == [r.messages for r in from_json] == [PAIR, GROUP]
    assert [r.speakers for r in from_csv] == [2, 3]
    assert from_csv[0].left_out == (0, 7)  # a cell's lines are counted as written: a blank one is line 3


def test_script_format_is_detected_and_can_be_named(tmp_path):
    assert data.detect_format(script("皇上：嗯。", "甄嬛：是。")) == "script"
    assert len(data.load_records(SCENES_JSON, "script")) == 2
    with pytest.raises(DataError, match="in script format but data_format is 'alpaca'"):
        data.load_records(SCENES_JSON, "alpaca")
    assert "script" in RunConfig.__dataclass_fields__["data_format"].metadata["choices"]


def test_the_bundled_script_sample_loads():
    records = data.load_records(SAMPLE)
    assert len(records) == 5 and all(r.messages[-1]["role"] == "assistant" for r in records)
    assert all("甄嬛：" not in m["content"] for r in records for m in r.messages if m["role"] == "assistant")


# --- tables ----------------------------------------------------------------------------------------
def test_alpaca_csv_tsv_and_parquet_load_as_the_json(tmp_path):
    import pandas as pd

    expected = [r.messages for r in data.load_records(QA_JSON)]
    assert [r.messages for r in data.load_records(QA_CSV)] == expected
    rows = json.loads(QA_JSON.read_text(encoding="utf-8"))
    columns = ("instruction", "input", "output", "system", "history")
    pd.DataFrame([{key: row.get(key) for key in columns} for row in rows]).to_parquet(tmp_path / "qa.parquet")
    as_text = [{**row, "history": json.dumps(row["history"], ensure_ascii=False) if "history" in row else ""}
               for row in rows]
    pd.DataFrame([{key: row.get(key, "") for key in columns} for row in as_text]).to_csv(
        tmp_path / "qa.tsv", sep="\t", index=False)
    assert [r.messages for r in data.load_records(tmp_path / "qa.tsv")] == expected
    parquet = data.load_records(tmp_path / "qa.parquet")
    assert [r.messages for r in parquet] == expected and parquet[2].messages[0]["content"] == "42"  # text, not a number
    # the columns alone, for a caller that checks a file is a dataset before reading it
    assert table_columns(QA_CSV, "csv") == table_columns(tmp_path / "qa.parquet", "parquet") == list(columns)
    assert table_columns(write(tmp_path, "bad.parquet", "no"), "parquet") is None


def test_chat_tables_hold_json_in_csv_and_lists_in_parquet(tmp_path):
    import pandas as pd

    chats = [[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "皇上万福。"}],
             [{"role": "system", "content": "你是甄嬛。"}, {"role": "user", "content": "早"},
              {"role": "assistant", "content": "早，皇上。"}]]
    pd.DataFrame({"messages": chats}).to_parquet(tmp_path / "chat.parquet", index=False)
    pd.DataFrame({"messages": [json.dumps(c, ensure_ascii=False) for c in chats]}).to_csv(tmp_path / "chat.csv",
                                                                                          index=False)
    for name in ("chat.parquet", "chat.csv"):
        assert [r.messages for r in data.load_records(tmp_path / name)] == chats, name
    pd.DataFrame({"role_name": ["甄嬛"], "dialog": [["皇上：你来了。", "甄嬛：臣妾在。"]]}).to_parquet(
        tmp_path / "script.parquet", index=False)
    [record] = data.load_records(tmp_path / "script.parquet")
    assert record.messages == [{"role": "user", "content": "你来了。"}, {"role": "assistant", "content": "臣妾在。"}]


# --- bad input: every message names the place, in both languages ----------------------------------
SCRIPT_LINE = json.dumps(script("皇上：你来了。", "甄嬛：是。"), ensure_ascii=False)
BAD = [  # name, content, parts of the English message, parts of the Chinese one
    ("silent.jsonl", json.dumps(script("皇上：你来了。", "华妃：哼。"), ensure_ascii=False),
     ["record 1 (line 1), field 'role_name'", "'甄嬛' never speaks", "speakers: 皇上, 华妃"],
     ["第 1 条记录（第 1 行），字段 'role_name'", "一句话也没有说", "皇上, 华妃"]),
    ("only_first.jsonl", f'{SCRIPT_LINE}\n' + json.dumps(script("甄嬛：先说。", "皇上：嗯。"), ensure_ascii=False),
     ["record 2 (line 2), field 'dialog'", "speaks only before anyone else"],
     ["第 2 条记录（第 2 行），字段 'dialog'", "只在别人开口之前说话"]),
    ("no_name.jsonl", json.dumps(script("皇上：你来了。", "：是。"), ensure_ascii=False),
     ["field 'dialog[1]'", "names no speaker"], ["字段 'dialog[1]'", "没有写说话人"]),
    ("no_words.jsonl", json.dumps(script("皇上：", "甄嬛：是。"), ensure_ascii=False),
     ["field 'dialog[0]'", "'皇上' says nothing"], ["字段 'dialog[0]'", "什么也没说"]),
    ("number_line.json", json.dumps([script("皇上：你来了。", 3)], ensure_ascii=False),
     ["record 1 (line 1), field 'dialog[1]'", "not a number"], ["字段 'dialog[1]'", "而不是数字"]),
    ("no_dialog.json", '[{"role_name": "甄嬛"}]', ["field 'dialog'", "is missing"], ["字段 'dialog'", "缺少"]),
    ("mixed.json", '[{"role_name": "甄嬛", "dialog": [], "instruction": "x"}]',
     ["record 1", "several formats: alpaca, script"], ["第 1 条记录", "混用了几种格式"]),
    ("missing_column.csv", "instruction,input\n你好,\n",
     ["column 'output' is missing", "'instruction', 'input'"], ["缺少 'output' 列"]),
    ("script_column.csv", "role_name,lines\n甄嬛,x\n", ["column 'dialog' is missing"], ["缺少 'dialog' 列"]),
    ("unknown_columns.csv", "question,answer\n问,答\n", ["unknown columns ('question', 'answer')"], ["无法识别表格的列"]),
    ("cells.csv", "instruction,output\n你好,皇上,万福\n", ["record 1 (line 2)", "3 cells", "2 columns"],
     ["第 1 条记录（第 2 行）", "3 个单元格"]),
    ("quote.csv", 'instruction,output\n你好,"好\n\n', ["record 1 (line 2)", "invalid CSV"], ["第 1 条记录（第 2 行）", "CSV 无效"]),
    ("empty_output.csv", 'instruction,output\n你好,"多行\n问"\n再问,\n',
     ["record 2 (line 4), field 'output'", "is empty"], ["第 2 条记录（第 4 行），字段 'output'", "内容是空的"]),
    ("bad_cell.csv", 'messages\n"[{""role"": ""user""}"\n', ["record 1 (line 2), field 'messages'", "not valid JSON"],
     ["字段 'messages'", "不是有效的 JSON"]),
    ("bad_dialog.csv", 'role_name,dialog\n甄嬛,"[""皇上：嗯"" ""甄嬛：是""]"\n',
     ["record 1 (line 2), field 'dialog'", "not valid JSON"], ["字段 'dialog'", "不是有效的 JSON"]),
    ("repeated.csv", "instruction,instruction\n你好,是\n", ["column 'instruction' more than once"], ["不止一次"]),
    ("header_only.csv", "instruction,output\n", ["holds no records"], ["没有任何记录"]),
    ("broken.parquet", "PAR1 not really", ["cannot be read as Parquet"], ["无法按 Parquet 读取"]),
]


@pytest.mark.parametrize("name,content,english,chinese", BAD, ids=[case[0] for case in BAD])
def test_bad_scripts_and_tables_name_the_place(tmp_path, name, content, english, chinese):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        data.load_records(path)
    en, zh = caught.value.render("en"), caught.value.render("zh")
    assert en.startswith(str(path)) and zh.startswith(str(path))
    assert all(part in en for part in english), en
    assert all(part in zh for part in chinese), zh
    assert caught.value.fix is not None


# --- the doctor -------------------------------------------------------------------------------------
def test_the_doctor_counts_turns_speakers_and_lines_left_out():
    records = data.load_records(SCENES_JSON)
    report = data.dataset_report(records)
    assert (report.turns.min, report.turns.median, report.turns.max) == (4, 4, 4)
    assert (report.scripts, report.speakers, report.left_out, report.left_out_records) == (2, [(2, 1), (3, 1)], 2, [0])
    en, zh = report.to_text("en"), report.to_text("zh")
    assert "Turns per record (user and assistant messages): min 4, median 4, max 4" in en
    assert "Speakers per script: 2 speakers in 1 record, 3 speakers in 1 record" in en
    assert "Script lines left out of the conversations: 2, in 1 record (record 1)" in en
    assert "每段台词的说话人数：2 人 1 条，3 人 1 条" in zh and "未进入对话的台词：2 行，在 1 条中（第 1 条）" in zh
    qa = data.dataset_report(data.load_records(QA_JSON))  # one exchange a record (one with history): turns shown
    assert (qa.turns.min, qa.turns.max, qa.scripts) == (2, 4, 0) and "Speakers" not in qa.to_text("en")


def test_data_check_prints_turns_and_speakers(capsys):
    from lora_studio.cli import main

    assert main(["data", "check", str(SAMPLE), "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "5 records, format OK" in out and "Turns per record" in out
    assert "Speakers per script: 2 speakers in 3 records, 3 speakers in 1 record, 4 speakers in 1 record" in out


# --- end to end: the demo model's template trains the role's lines only --------------------------------
@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    """The demo model's renderer: its tokenizer and chat template, built as the demo build makes them.

    Only the tokenizer and the model's config are written (a fraction of a second): rendering and
    labelling need no weights, and the demo build's pre-training is minutes on busy shared cores.
    """
    import random

    from transformers import LlamaConfig

    from lora_studio.demo_model import RECIPE, pretraining_documents, train_tokenizer
    from lora_studio.models import renderer_for
    from lora_studio.workspace import Workspace

    folder = tmp_path_factory.mktemp("demo-tokenizer")
    tokenizer = train_tokenizer(pretraining_documents(random.Random(RECIPE.seed)), RECIPE)
    tokenizer.save_pretrained(folder)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=RECIPE.hidden_size, num_hidden_layers=1).save_pretrained(folder)
    return renderer_for(RunConfig(model_name_or_path=str(folder)), Workspace(tmp_path_factory.mktemp("ws")))


def trained_runs(renderer, messages) -> list[str]:
    from lora_studio.templates import IGNORE_INDEX

    example = renderer.encode_example(messages)
    pairs = zip(example.input_ids, example.labels)
    return [renderer.tokenizer.decode([i for i, _ in run])
            for trained, run in itertools.groupby(pairs, key=lambda pair: pair[1] != IGNORE_INDEX) if trained]


def test_a_script_trains_only_the_roles_lines(renderer):
    first, second = data.load_records(SCENES_CSV)
    assert trained_runs(renderer, first.messages) == ["臣妾在等皇上。\n炉上温着酒。<|im_end|>", "谢皇上。<|im_end|>"]
    assert trained_runs(renderer, second.messages) == ["（低声）娘娘万福。<|im_end|>", "谢娘娘。<|im_end|>"]
    text = renderer.render_text(renderer.with_system(second.messages))
    assert "华妃：莞贵人来得倒早。" in text and "甄嬛" not in text  # the role's name is never in the text


def test_the_studio_doctor_and_inspector_show_turns_and_speakers(renderer):
    from lora_studio.ui import dataset_view as view

    records = data.load_records(SCENES_JSON)
    config = RunConfig(data_files=[str(SCENES_JSON)], cutoff_len=256)
    markdown, _bars = view.doctor(records, config, renderer, "en")
    assert "| Turns min / median / max | 4 / 4 / 4 |" in markdown
    assert "| Speakers per script | 2 speakers in 1 record, 3 speakers in 1 record |" in markdown
    assert "| Script lines left out | 2 (record 1) |" in markdown
    _segments, counts = view.token_segments(records[0], renderer, 256, "zh")
    assert view.inspector_summary(counts, "zh").endswith("4 轮，2 位说话人，2 行台词未进入对话。")
