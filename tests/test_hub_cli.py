"""`python studio.py download` and `models`: whole outputs, Ctrl-C, and a bad source."""

from __future__ import annotations

import _thread
import signal
import threading

import pytest

from lora_studio import hub

from .hub_fixtures import *  # noqa: F403 - the server and its sandbox


def test_ctrl_c_in_the_cli_cancels_and_says_how_to_resume(server, capsys, ws):
    server.delay = 0.05  # ~1.6 s for the big file
    timers = []

    def press_ctrl_c_soon(*args):
        # A real Ctrl-C: KeyboardInterrupt raised asynchronously in the main thread, wherever it is.
        if not timers:
            timers.append(threading.Timer(0.1, _thread.interrupt_main))
            timers[0].start()

    server.on_file_request = press_ctrl_c_soon
    # a process started in the background (nohup, `cmd &`) inherits SIGINT ignored, and interrupt_main
    # then does nothing: give the test the handler an interactive shell's Python has
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run_cli(ws, "download", "Demo/tiny-big") == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "download cancelled. Run the same download again" in capsys.readouterr().err
    assert (hub.model_folder("Demo/tiny-big", ws) / (BIG_FILE + ".incomplete")).is_file()


def test_cli_download_then_models(server, capsys, ws, tiny_model):
    assert run_cli(ws, "models") == 0
    assert capsys.readouterr().out == (f"No models in {ws.models} yet. Get one with: python studio.py download "
                                       "Qwen/Qwen2.5-0.5B-Instruct  (or: python studio.py demo-model)\n")
    assert run_cli(ws, "download", "Demo/tiny") == 0
    out, err = capsys.readouterr()
    files = [p for p in tiny_model.rglob("*") if p.is_file()]
    size = hub.format_bytes(sum(p.stat().st_size for p in files))
    folder = ws.models / "Demo--tiny"
    assert out == (f"Downloading Demo/tiny from ModelScope: {len(files)} files, {size} into {folder}\n"
                   f"Saved to {folder}\n"
                   "Use it with: --set model_name_or_path=Demo/tiny\n")
    assert "100%" in err and without_bars(err) == ""  # the tqdm bar ends full, and nothing else is said
    (ws.models / "half").mkdir()
    (ws.models / "half" / "config.json").write_text("{}")
    assert run_cli(ws, "models") == 0
    width = len("Demo/tiny")
    assert capsys.readouterr().out == (
        f"Models in {ws.models}:\n"
        f"  {'Demo/tiny':<{width}}  {size:>9}  ready\n"
        f"  {'half':<{width}}  {'2 B':>9}  incomplete: missing tokenizer files (tokenizer.json, tokenizer.model, "
        "or vocab.json with merges.txt); weights (*.safetensors or *.bin)\n")
    assert run_cli(ws, "models", lang="zh") == 0
    assert capsys.readouterr().out == (
        f"{ws.models} 中的模型：\n"
        f"  {'Demo/tiny':<{width}}  {size:>9}  可用\n"
        f"  {'half':<{width}}  {'2 B':>9}  不完整：缺少 分词器文件（tokenizer.json、tokenizer.model，或 vocab.json "
        "加 merges.txt）；权重（*.safetensors 或 *.bin）\n")


def test_cli_download_rejects_an_unknown_source(ws):
    with pytest.raises(SystemExit):
        run_cli(ws, "download", "Qwen/Qwen3-0.6B", "--source", "github")
