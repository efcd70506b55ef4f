"""The machine monitor: sane RAM numbers, 'no GPU' said clearly, nvidia-smi read in the background, both languages."""

from __future__ import annotations

import os
import stat
import sys
import time

import pytest

from lora_studio import monitor
from lora_studio.monitor import Accelerator, MachineSnapshot, Monitor, lines, parse_meminfo, parse_nvidia_smi

H200_SMI = """0, NVIDIA H200, 81234, 143771, 87
1, NVIDIA H200, 3, 143771, 0
"""


def test_a_snapshot_on_this_machine_has_sane_ram_and_says_there_is_no_gpu():
    import torch

    snap = Monitor(nvidia_smi=None).snapshot()
    assert snap.ram_total is not None and 256 * 2 ** 20 < snap.ram_total < 2 ** 50
    assert 0 < snap.ram_used < snap.ram_total
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    assert abs(snap.ram_total - page * pages) < 0.05 * page * pages  # /proc/meminfo agrees with sysconf
    if not torch.cuda.is_available():
        assert snap.accelerators == () and not snap.has_gpu and snap.source == "none"
        assert lines(snap, "en")[0] == "No GPU found: training and chat run on the CPU."
        assert lines(snap, "zh")[0] == "未检测到 GPU：训练和对话都在 CPU 上运行。"


def test_meminfo_is_read_as_total_minus_available():
    sample = "MemTotal:       16318460 kB\nMemFree:         1000000 kB\nMemAvailable:    8159230 kB\n"
    used, total = parse_meminfo(sample)
    assert total == 16318460 * 1024 and used == (16318460 - 8159230) * 1024
    assert parse_meminfo("nothing here") == (None, None)


def test_nvidia_smi_output_is_parsed():
    gpus = parse_nvidia_smi(H200_SMI)
    assert gpus == (Accelerator(0, "NVIDIA H200", 81234 * 2 ** 20, 143771 * 2 ** 20, 87),
                    Accelerator(1, "NVIDIA H200", 3 * 2 ** 20, 143771 * 2 ** 20, 0))
    odd = parse_nvidia_smi("0, Tesla T4, [N/A], 15360, [Not Supported]\nNo devices were found\n")
    assert odd == (Accelerator(0, "Tesla T4", None, 15360 * 2 ** 20, None),)


def test_the_formatter_words_gpus_ram_and_speed_in_both_languages():
    snap = MachineSnapshot(accelerators=(Accelerator(0, "NVIDIA H200", 60 * 2 ** 30, 140 * 2 ** 30, 87,
                                                     int(42.5 * 2 ** 30)),),
                           ram_used=5 * 2 ** 30, ram_total=16 * 2 ** 30, tokens_per_second=1234.4)
    assert lines(snap, "en") == ["GPU 0 (NVIDIA H200): memory 60.0 / 140.0 GiB, 42.5 GiB held by the studio, "
                                 "utilisation 87%", "RAM 5.0 / 16.0 GiB", "training at 1,234 tokens/s"]
    assert lines(snap, "zh") == ["GPU 0（NVIDIA H200）：显存 60.0 / 140.0 GiB，本进程占用 42.5 GiB，利用率 87%",
                                 "内存 5.0 / 16.0 GiB", "训练速度 1,234 token/秒"]
    idle = MachineSnapshot(ram_used=1, ram_total=2 ** 30)
    assert lines(idle, "en")[-1] == "no training running" and lines(idle, "zh")[-1] == "当前没有训练在运行"


def fake_nvidia_smi(tmp_path, output: str, delay: float = 0.0):
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep({delay})\nprint({output!r}, end='')\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return (str(script), *monitor.NVIDIA_SMI_QUERY[1:])


def wait_for(reading, seconds=20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        snap = reading()
        if not snap.pending:
            return snap
        time.sleep(0.05)
    raise AssertionError("nvidia-smi's answer never arrived")


def test_nvidia_smi_answers_in_the_background_and_readings_are_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor, "nvml_accelerators", lambda: None)  # as where pynvml is not installed
    watch = Monitor(max_age=60.0, nvidia_smi=fake_nvidia_smi(tmp_path, H200_SMI, delay=0.3))
    started = time.monotonic()
    first = watch.snapshot()
    assert time.monotonic() - started < 0.25  # never waits for nvidia-smi
    assert first.pending and first.has_gpu and lines(first, "en")[0] == "Reading the GPUs…"
    snap = wait_for(watch.snapshot)
    assert [a.name for a in snap.accelerators] == ["NVIDIA H200", "NVIDIA H200"] and snap.source == "nvidia-smi"
    assert snap.accelerators[0].utilization == 87
    again = watch.snapshot(tokens_per_second=10.0)  # within max_age: the same reading, today's speed
    assert again.taken == snap.taken and again.accelerators == snap.accelerators and again.tokens_per_second == 10.0
    watch.close()


def test_a_hung_nvidia_smi_is_killed_and_reads_as_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor, "nvml_accelerators", lambda: None)
    monkeypatch.setattr(monitor, "NVIDIA_SMI_TIMEOUT", 0.2)
    watch = Monitor(max_age=0.0, nvidia_smi=fake_nvidia_smi(tmp_path, H200_SMI, delay=30))
    assert watch.snapshot().pending
    time.sleep(0.3)
    snap = wait_for(watch.snapshot, seconds=5)
    assert snap.accelerators == () and not snap.has_gpu
    watch.close()


def test_the_panel_shows_the_lines_in_the_readers_language():
    pytest.importorskip("gradio")
    from lora_studio.ui.monitor_panel import panel_html

    snap = MachineSnapshot(ram_used=2 ** 30, ram_total=4 * 2 ** 30)
    shown = panel_html(snap, "zh")
    assert "本机状态" in shown and "<li>未检测到 GPU：训练和对话都在 CPU 上运行。</li>" in shown
    assert "<li>RAM 1.0 / 4.0 GiB</li>" in panel_html(snap, "en")
