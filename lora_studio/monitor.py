"""The machine monitor: accelerator memory and utilisation, RAM, and the run's tokens/s, as plain data.

    monitor = Monitor()                      # one per studio (the Train tab's panel owns it)
    snap = monitor.snapshot(tokens_per_second=491.0)
    lines(snap, "zh")                        # what the panel shows, in the reader's language

Where the numbers come from, cheapest first, never blocking the caller:
- accelerators: NVML through `pynvml` when installed (memory used/total and utilisation of every
  GPU, whoever uses it, without creating a CUDA context); else `nvidia-smi --query-gpu=...` when on
  PATH, started in the background and read on a later call (a hung driver never stalls the page; it
  is killed after NVIDIA_SMI_TIMEOUT); else torch itself for GPUs this process already uses
  (`torch.cuda.mem_get_info`: asking about the others would create a context on each); Apple's MPS
  through `torch.mps`. This process's own torch allocation is added where CUDA is started here.
- RAM: /proc/meminfo (MemTotal - MemAvailable), else psutil when installed, else os.sysconf.
A snapshot is kept for MAX_AGE seconds, so any number of open pages cost one reading.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_AGE = 2.0                 # seconds a snapshot is reused
NVIDIA_SMI_TIMEOUT = 3.0      # seconds before a silent nvidia-smi is killed
NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                    "--format=csv,noheader,nounits")
MIB, GIB = 1024 ** 2, 1024 ** 3
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Accelerator:
    index: int
    name: str
    used: int | None = None         # bytes in use on the device (every process)
    total: int | None = None        # bytes
    utilization: int | None = None  # percent of time a kernel ran, as NVML reports it
    allocated: int | None = None    # bytes this process's torch holds there


@dataclass(frozen=True)
class MachineSnapshot:
    accelerators: tuple[Accelerator, ...] = ()
    ram_used: int | None = None      # bytes
    ram_total: int | None = None
    tokens_per_second: float | None = None  # the live run's, from its latest Progress event
    source: str = "none"             # where the accelerator numbers came from (nvml, nvidia-smi, torch, mps)
    pending: bool = False            # nvidia-smi is still answering: the accelerators come on the next call
    taken: float = field(default=0.0, compare=False)  # time.monotonic() of the reading

    @property
    def has_gpu(self) -> bool:
        return bool(self.accelerators) or self.pending


# --- readers (pure functions of text, so tests feed them samples) ----------------------------------
def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(used, total) bytes from /proc/meminfo's text: used is MemTotal - MemAvailable."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * 1024  # kB
    total, available = values.get("MemTotal"), values.get("MemAvailable", values.get("MemFree"))
    if total is None or available is None:
        return None, None
    return total - available, total


def parse_nvidia_smi(text: str) -> tuple[Accelerator, ...]:
    """The accelerators in `nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu
    --format=csv,noheader,nounits` output (MiB, percent); '[N/A]' and the like become None."""
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) < 5 or not cells[0].isdigit():
            continue
        # a name may itself hold a comma: the last three cells are the numbers
        index, name, (used, total, util) = int(cells[0]), ", ".join(cells[1:-3]), cells[-3:]
        found.append(Accelerator(index, name, _number(used, MIB), _number(total, MIB), _number(util, 1)))
    return tuple(found)


def _number(cell: str, unit: int) -> int | None:
    try:
        return int(float(cell) * unit)
    except ValueError:
        return None


def ram() -> tuple[int | None, int | None]:
    """(used, total) bytes of this machine's memory."""
    try:
        return parse_meminfo(MEMINFO.read_text(encoding="ascii"))
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        memory = psutil.virtual_memory()
        return memory.total - memory.available, memory.total
    try:
        page, pages, free = (os.sysconf(name) for name in ("SC_PAGE_SIZE", "SC_PHYS_PAGES", "SC_AVPHYS_PAGES"))
        return (pages - free) * page, pages * page
    except (ValueError, OSError, AttributeError):
        return None, None


def nvml_accelerators() -> tuple[Accelerator, ...] | None:
    """Every NVIDIA GPU through pynvml; None when pynvml or the driver is not there."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                util = None
            found.append(Accelerator(index, name.decode() if isinstance(name, bytes) else str(name),
                                     int(memory.used), int(memory.total), util))
        return tuple(found)
    except Exception:  # noqa: BLE001 - no driver, no permission: the next source is tried
        return None


def torch_accelerators() -> tuple[tuple[Accelerator, ...], str]:
    """GPUs this process already uses (CUDA started here), or Apple's MPS; ((), 'none') otherwise."""
    torch = sys.modules.get("torch")  # never imported for the monitor's sake (a second of start-up)
    if torch is None:
        return (), "none"
    cuda = torch.cuda
    if cuda.is_available() and cuda.is_initialized():
        found = []
        for index in range(cuda.device_count()):
            free, total = cuda.mem_get_info(index)
            found.append(Accelerator(index, cuda.get_device_name(index), total - free, total,
                                     _torch_utilization(cuda, index), cuda.memory_allocated(index)))
        return tuple(found), "torch"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        total = getattr(torch.mps, "recommended_max_memory", lambda: None)()
        return (Accelerator(0, "Apple MPS", torch.mps.driver_allocated_memory(), total, None,
                            torch.mps.current_allocated_memory()),), "mps"
    return (), "none"


def _torch_utilization(cuda, index: int) -> int | None:
    try:
        return int(cuda.utilization(index))  # needs pynvml (or amdsmi)
    except Exception:  # noqa: BLE001
        return None


def with_allocated(found: tuple[Accelerator, ...]) -> tuple[Accelerator, ...]:
    """`found` with this process's torch allocation added where CUDA is started here."""
    torch = sys.modules.get("torch")
    if torch is None or not found or not torch.cuda.is_initialized():
        return found
    count = torch.cuda.device_count()
    return tuple(Accelerator(a.index, a.name, a.used, a.total, a.utilization,
                             torch.cuda.memory_allocated(a.index) if a.index < count else None) for a in found)


# --- the monitor -----------------------------------------------------------------------------------
class Monitor:
    """Readings kept for `max_age` seconds; nvidia-smi answers in the background, never awaited."""

    def __init__(self, max_age: float = MAX_AGE, nvidia_smi: tuple[str, ...] | None = NVIDIA_SMI_QUERY):
        self.max_age = max_age
        self.command = nvidia_smi if nvidia_smi and shutil.which(nvidia_smi[0]) else None
        self._lock = threading.Lock()
        self._last: MachineSnapshot | None = None
        self._smi: subprocess.Popen | None = None
        self._smi_started = 0.0
        self._smi_result: tuple[Accelerator, ...] | None = None

    def snapshot(self, tokens_per_second: float | None = None) -> MachineSnapshot:
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is None or now - last.taken >= self.max_age or last.pending:
                last = self._last = self._read(now)
        return MachineSnapshot(last.accelerators, last.ram_used, last.ram_total, tokens_per_second,
                               last.source, last.pending, last.taken)

    def _read(self, now: float) -> MachineSnapshot:
        used, total = ram()
        found, source, pending = nvml_accelerators(), "nvml", False
        if found is None and self.command is not None:
            found, source = self._nvidia_smi(now), "nvidia-smi"
            pending = found is None  # no answer yet: the first one comes on a later call
        if not found and not pending:
            found, source = torch_accelerators()
        return MachineSnapshot(with_allocated(tuple(found or ())), used, total, None, source, pending, now)

    def _nvidia_smi(self, now: float) -> tuple[Accelerator, ...] | None:
        """The last answer of nvidia-smi; starts a new one when none is running (read on a later call)."""
        if self._smi is not None:
            if self._smi.poll() is not None:
                out = self._smi.stdout.read() if self._smi.stdout else ""
                self._smi_result = parse_nvidia_smi(out) if self._smi.returncode == 0 else ()
                self._smi = None
            elif now - self._smi_started > NVIDIA_SMI_TIMEOUT:  # a hung driver: the last answer stands
                self._smi.kill()
                self._smi.wait()
                self._smi = None
                self._smi_result = self._smi_result or ()
        if self._smi is None and (self._last is None or now - self._last.taken >= self.max_age):
            try:
                self._smi = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             stdin=subprocess.DEVNULL, text=True)
                self._smi_started = now
            except OSError:
                self.command = None
        return self._smi_result

    def close(self) -> None:
        with self._lock:
            if self._smi is not None and self._smi.poll() is None:
                self._smi.kill()
                self._smi.wait()
            self._smi = None


# --- in words ------------------------------------------------------------------------------------
def lines(snapshot: MachineSnapshot, lang: str) -> list[str]:
    """The snapshot as short lines in `lang`: one per accelerator (or 'no GPU'), RAM, the run's speed."""
    from .i18n import text

    shown = []
    for a in snapshot.accelerators:
        facts = [text("monitor.memory", lang, used=_gib(a.used), total=_gib(a.total))]
        if a.allocated is not None:
            facts.append(text("monitor.allocated", lang, size=_gib(a.allocated)))
        if a.utilization is not None:
            facts.append(text("monitor.utilization", lang, percent=a.utilization))
        shown.append(text("monitor.gpu", lang, index=a.index, name=a.name,
                          facts=text("monitor.separator", lang).join(facts)))
    if not snapshot.accelerators:
        shown.append(text("monitor.gpu_pending" if snapshot.pending else "monitor.no_gpu", lang))
    if snapshot.ram_total:
        shown.append(text("monitor.ram", lang, used=_gib(snapshot.ram_used), total=_gib(snapshot.ram_total)))
    else:
        shown.append(text("monitor.ram_unknown", lang))
    if snapshot.tokens_per_second:
        shown.append(text("monitor.speed", lang, tps=snapshot.tokens_per_second))
    else:
        shown.append(text("monitor.speed_idle", lang))
    return shown


def _gib(size: int | None) -> str:
    return "?" if size is None else f"{size / GIB:.1f}"
