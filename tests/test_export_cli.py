"""`python studio.py export` as a user runs it: whole outputs, exit codes, clear refusals, no partial exports.

The run is a 2-step tiny run on the demo model whose LoRA B matrices got noise, so the adapter changes
answers, with three probe prompts. Outputs are compared whole; only the workspace path (WS), the export folder (OUT), the export's
size and tqdm's bars on stderr are normalised.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .test_cli import shown, studio
from .test_export_merged import FEW_PROBES, perturb_adapter, set_probes
from tiny_model_fixture import train_tiny_run


@pytest.fixture(scope="session")
def cli_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("export-cli-ws")


@pytest.fixture(scope="session")
def cli_run(demo_model_dir, cli_ws) -> Path:
    from lora_studio.workspace import Workspace

    run = train_tiny_run(demo_model_dir, Workspace(cli_ws), "cli-run")
    perturb_adapter(run / "adapter", seed=1)
    set_probes(run, FEW_PROBES)
    return run


def normalised(text: str, ws: Path, out: Path) -> str:
    text = text.replace(str(out), "OUT")
    return re.sub(r"\(\d+\.\d (KB|MB)\)", "(SIZE)", shown(text, ws))


def answers_block(table: dict) -> list[str]:
    """The proof table's lines for a merged export whose every answer equals the studio's."""
    lines = [f"Proof: greedy answers to {len(table['prompts'])} probe prompts (at most 48 new tokens each), "
             "against the studio's chat"]
    for number, row in enumerate(table["prompts"], start=1):
        studio_text = row["answers"]["studio"]["text"].replace("\n", "\\n") or "∅"
        lines += [f"{number}. {row['prompt']}", f"   studio  {studio_text}", "   merged  = same"]
    return lines + [f"The adapter changes {table['adapter_changes']} of {len(table['prompts'])} answers (against "
                    "the base model).", f"merged answered all {len(table['prompts'])} probe prompts token for "
                    "token like the studio."]


def test_export_merged_prints_its_stages_the_proof_and_the_folder(cli_run, cli_ws, tmp_path):
    from lora_studio.export import read_verify

    out = tmp_path / "exports" / "merged"
    result = studio("--workspace", cli_ws, "export", "cli-run", "--to", "merged", "--out", out, env_home=cli_ws,
                    timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = read_verify(out)
    assert table["verdict"] == "same" and table["adapter_changes"] >= 1
    expected = "\n".join([
        "[1/4] Reading the run and its chat template",
        "Exporting merged: run cli-run, adapter WS/runs/cli-run/adapter",
        "[2/4] Writing the export",
        "Merged model written (safetensors weights, tokenizer, chat template, generation config)",
        "[3/4] Proof: answering the probe prompts",
        "[4/4] Putting the export in place",
        "Export ready: OUT (SIZE)",
        "",
        *answers_block(table),
        "",
        "Export folder: OUT",
        ""])
    assert normalised(result.stdout, cli_ws, out) == expected
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged"]  # nothing else left beside it


@pytest.mark.parametrize("lang,expected", [
    ("en", "error: WS/runs/empty-run: this run has no adapter to export: neither a final adapter/ nor a whole "
           "checkpoint. Train it until at least one checkpoint is saved (python studio.py train --resume "
           "continues it), then export again.\n"),
    ("zh", "错误：WS/runs/empty-run：这个运行还没有可导出的适配器：既没有最终的 adapter/，也没有完整的检查点。"
           "请先把它训练到至少保存了一个检查点（可以用 python studio.py train --resume 继续训练），再导出。\n"),
])
def test_a_run_without_an_adapter_is_one_message_in_the_users_language(cli_run, cli_ws, lang, expected):
    empty = cli_ws / "runs" / "empty-run"
    empty.mkdir(exist_ok=True)
    shutil.copy(cli_run / "config.yaml", empty / "config.yaml")
    result = studio("--workspace", cli_ws, "export", "empty-run", "--to", "merged", env_home=cli_ws, lang=lang)
    assert (result.returncode, result.stdout, shown(result.stderr, cli_ws)) == (2, "", expected)
    assert sorted(p.name for p in empty.iterdir()) == ["config.yaml"]


def test_an_unknown_quant_lists_the_known_ones(cli_run, cli_ws):
    from lora_studio.export import known_quants

    result = studio("--workspace", cli_ws, "export", "cli-run", "--to", "gguf", "--quant", "q3", env_home=cli_ws)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: --quant: unknown quant 'q3'. Known quants: {', '.join(known_quants())}.\n"
    assert not (cli_run / "exports").exists()


def test_an_unknown_target_lists_the_targets(cli_run, cli_ws):
    result = studio("--workspace", cli_ws, "export", "cli-run", "--to", "onnx", env_home=cli_ws)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "error: --to: there is no export target 'onnx'. Known targets: merged, gguf, ollama, space.\n")


def test_a_builders_own_error_surfaces_as_one_message_and_leaves_nothing(cli_run, cli_ws, tmp_path, monkeypatch,
                                                                         capsys):
    """What a missing llama.cpp or an unsupported architecture looks like: the builder's StudioError, once."""
    from lora_studio import cli, export
    from lora_studio.i18n import msg

    def build_and_fail(ctx):
        (ctx.staging / "half.gguf").write_bytes(b"GGUF")
        raise export.ExportError(msg("export.no_gguf"), "convert_hf_to_gguf.py", msg("export.no_gguf_fix"))

    monkeypatch.setattr(export, "builder_for", lambda target: build_and_fail)
    out = tmp_path / "exports" / "out"
    code = cli.main(["--workspace", str(cli_ws), "--lang", "en", "export", "cli-run", "--to", "merged",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines()[-1] == ("error: convert_hf_to_gguf.py: the export holds no GGUF file. The GGUF "
                                             "conversion produced no file; see the log above, fix it and export again.")
    assert captured.out.splitlines() == ["[1/4] Reading the run and its chat template",
                                         f"Exporting merged: run cli-run, adapter {cli_run / 'adapter'}",
                                         "[2/4] Writing the export"]
    assert list(out.parent.iterdir()) == []


def test_the_ollama_report_ends_with_the_create_command(tmp_path):
    from types import SimpleNamespace

    from lora_studio.cli_export import _report

    table = {"prompts": [], "sources": ["studio", "merged", "gguf"], "max_new_tokens": 48, "same": {},
             "verdict": "same", "adapter_changes": 0, "notes": []}
    (tmp_path / "commands.txt").write_text("ollama create cli-run -f Modelfile\nollama run cli-run\n",
                                           encoding="utf-8")
    job = SimpleNamespace(verify=table, out=tmp_path, request=SimpleNamespace(target="ollama"))
    assert _report(job, "en").splitlines()[-3:] == [
        f"Export folder: {tmp_path}", f"To add it to Ollama, run this in {tmp_path}:",
        "  ollama create cli-run -f Modelfile"]
    assert _report(job, "zh").splitlines()[-2] == f"在 {tmp_path} 里运行下面的命令，把它加进 Ollama："


def test_help_names_every_flag_and_the_quants(cli_ws):
    from lora_studio.export import known_quants

    result = studio("export", "-h", env_home=cli_ws)
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for flag in ("--to {merged,gguf,ollama,space}", "--quant QUANT", "--adapter CHECKPOINT", "--llama-cpp DIR",
                 "--out DIR", "--hub-id ID", "--trust-remote-code"):
        assert flag in flat
    assert f"known: {', '.join(known_quants())})" in flat


# --- the proof table -------------------------------------------------------------------------------
def fake_context(tokenizer, target="gguf"):
    from types import SimpleNamespace

    return SimpleNamespace(renderer=SimpleNamespace(tokenizer=tokenizer), adapter=Path("run/adapter"),
                           request=SimpleNamespace(target=target, run=Path("run")))


def test_the_table_marks_the_first_differing_token(demo_model_dir):
    from transformers import AutoTokenizer

    from lora_studio.export_verify import build_table, verdict_msg, verify_text
    from lora_studio.i18n import msg

    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_dir))
    studio = tokenizer("小主莫急", add_special_tokens=False)["input_ids"]
    other = studio[:2] + tokenizer("奴婢", add_special_tokens=False)["input_ids"]
    answers = {"studio": [studio, studio], "merged": [studio, studio], "gguf": [studio, other]}
    table = build_table(fake_context(tokenizer), ["你是谁？", "皇上可好？"], [[1, 2], [1, 3]], answers,
                        [studio, studio], {"merged": [True, True]}, [msg("export.note_no_llama_cpp")])
    cell = table["prompts"][1]["answers"]["gguf"]
    assert cell["same"] is False and cell["first_difference"] == 2
    assert cell["token"] == tokenizer.decode([other[2]]) and cell["studio_token"] == tokenizer.decode([studio[2]])
    assert table["same"] == {"merged": 2, "gguf": 1} and table["verdict"] == "differs"
    assert table["adapter_changes"] == 0
    assert verdict_msg(table).render("en") == ("Some answers differ from the studio's (the same: gguf 1/2 of 2 "
                                               "prompts); the proof table shows where.")
    shown = verify_text(table, "en").splitlines()
    assert shown == [
        "Proof: greedy answers to 2 probe prompts (at most 48 new tokens each), against the studio's chat",
        "1. 你是谁？",
        "   studio  小主莫急",
        "   merged  = same",
        "   gguf    = same",
        "2. 皇上可好？",
        "   studio  小主莫急",
        "   merged  = same",
        f"   gguf    ≠ differs from token 2: {cell['token']!r} where the studio has {cell['studio_token']!r}",
        f"           {tokenizer.decode(other)}",
        "llama-cpp-python is not installed, so llama.cpp was not checked (pip install llama-cpp-python and "
        "export again to add it).",
        "The adapter changes 0 of 2 answers (against the base model).",
        "Some answers differ from the studio's (the same: gguf 1/2 of 2 prompts); the proof table shows where."]
    assert "≠ 从第 2 个 token 起不同" in verify_text(table, "zh")


def test_read_verify_says_what_is_wrong(tmp_path):
    from lora_studio.export import ExportError, read_verify

    with pytest.raises(ExportError) as missing:
        read_verify(tmp_path)
    assert missing.value.render("en") == (f"{tmp_path / 'verify.json'}: there is no verify.json here: this is "
                                          "not a whole LoRA Studio export. Pick an export folder (under "
                                          "runs/<run>/exports/), or export again.")
    (tmp_path / "verify.json").write_text("{torn", encoding="utf-8")
    with pytest.raises(ExportError, match="verify.json cannot be read"):
        read_verify(tmp_path)
