"""Dataset loading, validation messages, dedupe/split and the dataset report (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_studio import data
from lora_studio.errors import DataError

from .conftest import HUANHUAN, ROOT

SAMPLE = ROOT / "data" / "huanhuan_sample.json"
OK = '{"instruction": "你好", "input": "", "output": "皇上万福。"}'
CHAT_OK = '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "皇上万福。"}]}'


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def chat(*turns, key="messages", role="role", content="content") -> str:
    return json.dumps({key: [{role: r, content: c} for r, c in turns]}, ensure_ascii=False)


# name, file content, text every message must contain (besides the file name)
BAD_FILES = [
    ("syntax.json", f'[{OK},\n {{"instruction": "x", "output": }}]',
     ["record 2 (line 2)", "invalid JSON", "line 2, column 33"]),
    ("syntax.jsonl", f'{OK}\n\n{{"instruction": "x" "output": "y"}}\n',
     ["record 2 (line 3)", "invalid JSON", "column 21"]),
    ("missing_comma.json", f"[{OK}\n {OK}]", ["after record 1", "delimiter", "line 2"]),
    ("trailing_comma.json", f"[{OK},\n]", ["trailing comma", "line 2"]),
    ("after_list.json", f"[{OK}] extra", ["after the closing ']'"]),
    ("object.json", OK, ["top level is an object", "wrap it in a list"]),
    ("number.json", "42", ["top level is a number"]),
    ("lines_in_json.json", f"{OK}\n{OK}\n", ["JSON Lines", ".jsonl"]),
    ("list_in_jsonl.jsonl", f"[\n{OK}\n]", ["record 1 (line 1)", "rename the file to .json"]),
    ("empty_list.json", "[]", ["no records"]),
    ("not_object.json", f'[{OK}, "just text"]', ["record 2", "a string, not a JSON object"]),
    ("missing.json", '[{"instruction": "你好", "input": ""}]', ["record 1", "field 'output'", "missing"]),
    ("empty_output.jsonl", f'{OK}\n{{"instruction": "x", "input": "", "output": "  "}}',
     ["record 2 (line 2)", "field 'output'", "is empty"]),
    ("number_field.json", '[{"instruction": 5, "output": "y"}]', ["field 'instruction'", "not a number"]),
    ("null_output.json", '[{"instruction": "x", "output": null}]', ["field 'output'", "not null"]),
    ("history_type.json", '[{"instruction": "x", "output": "y", "history": "hi"}]',
     ["field 'history'", "not a string"]),
    ("history_pair.json", '[{"instruction": "x", "output": "y", "history": [["a", "b", "c"]]}]',
     ["field 'history[0]'", "3 items", "[user, assistant] pair"]),
    ("history_text.json", '[{"instruction": "x", "output": "y", "history": [["a", 1]]}]',
     ["field 'history[0][1]'", "not a number"]),
    ("unknown_role.jsonl", chat(("user", "hi"), ("bot", "yo")),
     ["record 1 (line 1)", "field 'messages[1].role'", "unknown role 'bot'"]),
    ("order.jsonl", chat(("user", "hi"), ("user", "again"), ("assistant", "yo")),
     ["field 'messages[1].role'", "out of order", "an assistant turn"]),
    ("ends_with_user.jsonl", chat(("human", "hi"), key="conversations", role="from", content="value"),
     ["field 'conversations[0]'", "does not end with an assistant message"]),
    ("late_system.jsonl", chat(("user", "hi"), ("system", "x"), ("assistant", "yo")),
     ["field 'messages[1].role'", "only come first"]),
    ("empty_chat.jsonl", '{"messages": []}', ["field 'messages'", "empty"]),
    ("message_type.jsonl", '{"messages": ["hi"]}', ["field 'messages[0]'", "not a string"]),
    ("content_type.jsonl", '{"messages": [{"role": "user", "content": [{"type": "text"}]}]}',
     ["field 'messages[0].content'", "not a list"]),
    ("unknown_format.json", '[{"prompt": "hi", "response": "yo"}]',
     ["record 1", "neither alpaca nor chat", "'prompt', 'response'"]),
    ("mixed.jsonl", f"{OK}\n{CHAT_OK}\n", ["record 2 (line 2)", "mixed formats", "record 1"]),
    ("empty.json", "", ["file is empty"]),
    ("blank.jsonl", " \n\t\n", ["only whitespace"]),
    ("latin.json", b'[{"instruction": "\xc4\xe3", "output": "y"}]', ["not valid UTF-8", "byte offset 18", "0xc4"]),
    ("table.xlsx", "instruction,output\nhi,yo\n", ["unsupported file type '.xlsx'", ".jsonl", ".csv"]),
]


@pytest.mark.parametrize("name,content,expected", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_file_names_file_record_and_field(tmp_path, name, content, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        data.load_records(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert caught.value.fix, "every data error says what to do"


def test_explicit_format_that_does_not_match(tmp_path):
    path = write(tmp_path, "chat.jsonl", CHAT_OK)
    with pytest.raises(DataError, match="record 1.*in messages format but data_format is 'alpaca'"):
        data.load_records(path, "alpaca")
    with pytest.raises(DataError, match="data_format 'csv'"):
        data.load_records(path, "csv")


def test_missing_file_directory_and_the_full_set_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"nope\.json: file not found \(looked for .*nope\.json\)"):
        data.load_records("nope.json")
    with pytest.raises(DataError, match="data/README.md"):
        data.load_records("data/huanhuan.json")
    write(tmp_path, "inside.jsonl", OK)
    with pytest.raises(DataError, match=r"directory, not a file.*inside\.jsonl"):
        data.load_records(".")


def test_relative_paths_are_read_from_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path, "mine.jsonl", OK)
    monkeypatch.chdir(tmp_path)
    [record] = data.load_records("mine.jsonl")
    assert record.source == str(tmp_path / "mine.jsonl") and record.index == 0


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + f"{OK}\r\n{CHAT_OK}\r\n".encode())
    with pytest.raises(DataError, match="mixed formats"):  # parsed fine, line 2 really is another format
        data.load_records(path)
    path = write(tmp_path, "bom.json", b"\xef\xbb\xbf" + f"[{OK}]".encode())
    assert data.load_records(path)[0].messages[-1]["content"] == "皇上万福。"


def test_alpaca_input_system_and_history_become_turns(tmp_path):
    record = {"instruction": "念一句诗", "input": "关于梅花", "output": "一树寒梅映雪开。",
              "system": "你是甄嬛。", "history": [["你好", "皇上万福。"], ["你是谁？", "臣妾甄嬛。"]]}
    path = write(tmp_path, "a.json", json.dumps([record, {"instruction": "你好", "output": "嗯。"}]))
    first, second = data.load_records(path)
    assert first.raw == record
    assert first.messages == [
        {"role": "system", "content": "你是甄嬛。"},
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "皇上万福。"},
        {"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "臣妾甄嬛。"},
        {"role": "user", "content": "念一句诗\n关于梅花"},
        {"role": "assistant", "content": "一树寒梅映雪开。"},
    ]
    assert second.messages == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "嗯。"}]


@pytest.mark.parametrize("line", [
    chat(("system", "你是甄嬛。"), ("user", "你好"), ("assistant", "皇上万福。")),
    chat(("system", "你是甄嬛。"), ("human", "你好"), ("gpt", "皇上万福。"),
         key="conversations", role="from", content="value"),
], ids=["openai", "sharegpt"])
def test_chat_formats_normalise_to_the_same_messages(tmp_path, line):
    assert data.detect_format(json.loads(line)) == "messages"
    [record] = data.load_records(write(tmp_path, "c.jsonl", line + "\n"))
    assert record.messages == [{"role": "system", "content": "你是甄嬛。"},
                               {"role": "user", "content": "你好"}, {"role": "assistant", "content": "皇上万福。"}]


def test_detect_format():
    assert data.detect_format(json.loads(OK)) == "alpaca"
    assert data.detect_format({"conversations": []}) == "messages"
    with pytest.raises(DataError, match="keys found: 'question', 'answer'"):
        data.detect_format({"question": "q", "answer": "a"})


def test_load_files_concatenates_and_keeps_each_source(tmp_path):
    a, b = write(tmp_path, "a.json", f"[{OK}]"), write(tmp_path, "b.jsonl", f"{CHAT_OK}\n{CHAT_OK}\n")
    records = data.load_files([a, str(b)])
    assert [(Path(r.source).name, r.index) for r in records] == [("a.json", 0), ("b.jsonl", 0), ("b.jsonl", 1)]
    with pytest.raises(DataError, match="no data files"):
        data.load_files([])


def test_dedupe_keeps_the_first_copy(tmp_path):
    other = '{"instruction": "你好", "input": "", "output": "嗯。"}'
    records = data.load_records(write(tmp_path, "d.jsonl", "\n".join([OK, other, OK, OK])))
    kept, removed = data.dedupe(records)
    assert removed == 2 and [r.index for r in kept] == [0, 1]


def test_split_is_deterministic_and_disjoint(tmp_path):
    lines = [json.dumps({"instruction": f"问题{i}", "output": f"回答{i}"}, ensure_ascii=False) for i in range(50)]
    records = data.load_records(write(tmp_path, "s.jsonl", "\n".join(lines)))
    train, val = data.split(records, 0.1, seed=42)
    assert len(val) == 5 and len(train) == 45
    assert {r.index for r in train} | {r.index for r in val} == set(range(50))
    assert [r.index for r in val] == [r.index for r in data.split(records, 0.1, seed=42)[1]]
    assert [r.index for r in val] != [r.index for r in data.split(records, 0.1, seed=7)[1]]
    assert data.split(records, 0.0, seed=42) == (records, [])
    assert len(data.split(records[:3], 0.01, seed=1)[1]) == 1  # asked for validation: never empty


def test_select_records_dedupes_then_caps_then_splits(tmp_path):
    from lora_studio.config import RunConfig

    lines = [json.dumps({"instruction": f"问题{i % 40}", "output": f"回答{i % 40}"}, ensure_ascii=False)
             for i in range(50)]  # records 40-49 repeat 0-9
    path = write(tmp_path, "s.jsonl", "\n".join(lines))
    config = RunConfig(data_files=[str(path)], val_size=0.1, seed=3, max_samples=30)
    chosen = data.select_records(config)
    assert (chosen.total, chosen.removed, len(chosen.train), len(chosen.val)) == (50, 10, 27, 3)
    assert {r.index for r in chosen.train} | {r.index for r in chosen.val} == set(range(30))
    kept = data.dedupe(data.load_files(config.data_files))[0][:30]
    assert (chosen.train, chosen.val) == data.split(kept, 0.1, seed=3)
    everything = data.select_records(config.replace(dedupe=False, max_samples=0, val_size=0.0))
    assert (everything.total, everything.removed, len(everything.train), everything.val) == (50, 0, 50, [])


def test_the_doctor_and_a_run_choose_the_same_records(tmp_path):
    """The dataset doctor passes the records it already shows; a run reads the files: same split."""
    from lora_studio.config import RunConfig

    first = write(tmp_path, "a.json", json.dumps([{"instruction": f"问{i}", "output": "答"} for i in range(30)] * 2,
                                                 ensure_ascii=False))
    second = write(tmp_path, "b.jsonl", "\n".join([CHAT_OK] * 3 + [chat(("user", "早"), ("assistant", "早。"))]))
    config = RunConfig(data_files=[str(first), str(second)], val_size=0.2, seed=11)
    shown = data.load_files(config.data_files, config.data_format)  # what the data tab has loaded
    for changes in ({}, {"dedupe": False}, {"max_samples": 20}, {"seed": 12}):
        run, doctor = data.select_records(config.replace(**changes)), data.select_records(config.replace(**changes), shown)
        assert [(r.source, r.index) for r in run.train] == [(r.source, r.index) for r in doctor.train]
        assert [(r.source, r.index) for r in run.val] == [(r.source, r.index) for r in doctor.val]
        assert (run.total, run.removed) == (doctor.total, doctor.removed)
    assert data.select_records(config).removed == 30 + 2


def test_to_dataset_has_a_messages_column():
    records = data.load_records(SAMPLE)
    dataset = data.to_dataset(records)
    assert dataset.column_names == ["messages"] and len(dataset) == len(records)
    assert dataset[0]["messages"] == records[0].messages


def test_report_with_token_lengths_and_cutoff(tmp_path):
    lines = [OK, OK, '{"instruction": "你好", "output": "嗯。"}', '{"instruction": " 早 ", "output": "早。"}']
    records = data.load_records(write(tmp_path, "r.jsonl", "\n".join(lines)))
    report = data.dataset_report(records, token_length=lambda r: 10 * (r.index + 1), cutoff_len=25)
    assert (report.records, report.exact_duplicates, report.conflicting_prompts) == (4, 1, 1)
    assert [(g.first, g.count) for g in report.duplicate_groups] == [(0, 2)]
    assert report.conflicts[0].prompt == "你好" and report.conflicts[0].records == [0, 1, 2]
    assert report.whitespace == 1 and report.whitespace_records == [3]
    assert (report.lengths.min, report.lengths.median, report.lengths.max, report.over_cutoff) == (10, 25, 40, 2)
    assert sum(count for _, _, count in report.lengths.histogram) == 4
    text = report.to_text("en")
    assert "Exact duplicates: 1 record in 1 groups" in text and "record 1 x2: 「你好」" in text
    assert "Lengths in tokens" in text and "Over cutoff_len 25: 2 records" in text
    assert json.loads(json.dumps(report.to_dict()))["conflicting_prompts"] == 1


def test_report_counts_empty_fields_and_characters():
    records = [data.Record(0, "x", {}, [{"role": "user", "content": "问"}, {"role": "assistant", "content": ""}])]
    report = data.dataset_report(records)
    assert report.empty_fields == 1 and report.length_unit == "characters" and report.lengths.max == 1
    assert "pass --model to count tokens" in report.to_text("en")
    assert data.dataset_report([]).to_text("en").endswith("Lengths: no records")


def test_bundled_sample_is_clean():
    records = data.load_records(SAMPLE)
    assert 90 <= len(records) <= 120
    report = data.dataset_report(records)
    assert (report.exact_duplicates, report.conflicting_prompts, report.whitespace) == (0, 0, 0)
    assert len({r.messages[-2]["content"] for r in records}) == len(records)  # every prompt distinct
    answers = {r.messages[-2]["content"]: r.messages[-1]["content"] for r in records}
    assert "甄远道" in answers["你是谁？"]


@pytest.mark.skipif(not HUANHUAN.exists(), reason="the shared Zhen Huan set is not here")
def test_real_zhen_huan_set():
    records = data.load_records(HUANHUAN)
    assert len(records) == 3729
    report = data.dataset_report(records, cutoff_len=100)
    assert report.exact_duplicates == 112 and report.conflicting_prompts == 50
    assert {g.prompt: g.count for g in report.duplicate_groups}["你是谁？"] == 50
    assert report.whitespace_records == [226]  # 0-based index 226: " 小姐你听，..." is record 227
    assert (report.lengths.min, report.lengths.median, report.lengths.max) == (4, 49, 304)
    kept, removed = data.dedupe(records)
    assert removed == 112 and len(kept) == 3617


def test_cli_data_check_reports_an_error_without_traceback(tmp_path, capsys):
    from lora_studio.cli import main

    bad = write(tmp_path, "bad.jsonl", f"{OK}\n{{\"instruction\": \"x\"}}\n")
    assert main(["data", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, record 2 (line 2), field 'output'" in err and "Traceback" not in err
