"""The export job: a run's adapter out of the studio as a merged model, a GGUF, an Ollama model or a Space.

    job = ExportJob(ExportRequest(run=run_dir, target="merged"), workspace).start()
    ... poll job.events (ExportProgress, Log, then Finished or Failed) ...
    job.stop(); job.join()

An `ExportJob` is a `jobs.Job`. It resolves the run and its adapter (the request's, else the checkpoint
the user marked best, else the final adapter or the newest checkpoint), loads the run's settings and
chat renderer, checks the disk has room, and hands an `ExportContext` to the target's builder
(`export_merged.build_merged`, `export_gguf.build_gguf`, `export_ollama.build_ollama`,
`export_space.build_space`, imported by name when used). The builder writes into a staging folder beside
the export (`.<name>.partial-<pid>`); then the proof (`export_verify.prove`) answers the run's probe
prompts greedily through the studio's chat and through the export, and writes `verify.json` into the
staging folder. Only then is the staging folder renamed to the export folder (default
`run/exports/<target>`, `<target>-<quant>` for gguf and ollama). An existing export there is replaced only
by a whole one: it is moved aside, the new one renamed in, and the old one deleted; a failed or stopped
export leaves the old one as it was and no staging folder behind.

Events: `ExportProgress(stage, done, total)` where `stage` is a catalogue key (the job's STAGES, or a
builder's own finer stages) and done/total count within that stage; `Log` lines; at the end a `Finished`
whose `output` is the export folder and whose `text` says where it is and whether it answers like the
studio (`export.read_verify(out)` reads the whole table back).
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from . import disk
from .errors import StudioError
from .events import ExportProgress, Finished, Log
from .i18n import msg
from .jobs import Job
from .workspace import Workspace

TARGETS = ("merged", "gguf", "ollama", "space")
QUANT_TARGETS = ("gguf", "ollama")
# The job's own stages, in order (catalogue keys); builders report finer ones of their own.
STAGES = ("export.stage_resolve", "export.stage_build", "export.stage_verify", "export.stage_publish")
PARTIAL = ".partial-"      # .<name>.partial-<pid>: the export being written
OLD = ".old-"              # .<name>.old-<time>: the export being replaced, for the moment of the swap
DISK_MARGIN_BYTES = 50 * 1000**2
# Bytes per parameter of a GGUF file by quant, for the disk estimate only (k-quants mix block sizes).
GGUF_BYTES_PER_PARAM = MappingProxyType({"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q6_k": 0.83,
                                         "q5_k_m": 0.72, "q5_0": 0.69, "q4_k_m": 0.61, "q4_0": 0.57,
                                         "q3_k_m": 0.49, "q2_k": 0.41})


class ExportError(StudioError):
    """An export cannot be made as asked: no adapter, an unknown target or quant, a full disk, ..."""


class ExportStopped(Exception):
    """Raised at the next safe point once the user stopped the export."""


@dataclass(frozen=True)
class ExportRequest:
    run: Path                     # the run folder (or a run's name under the workspace's runs/)
    target: str                   # one of TARGETS
    quant: str = "f16"            # gguf and ollama: f16, q8_0, ... (export_gguf.QUANTS)
    adapter: Path | None = None   # a checkpoint; default: the best one marked, else the final adapter
    llama_cpp: Path | None = None  # the user's llama.cpp folder (its converter), else the fetched one
    hub_id: str = ""              # space: the base model's hub id (default from the catalogue)
    out: Path | None = None       # default run/exports/<target>[-<quant>]


def builder_for(target: str):
    """The target's `build_<target>(ctx) -> Path`, imported when first needed (its module may be absent)."""
    module = _target_module(target)
    return getattr(module, f"build_{target}")


def _target_module(target: str):
    name = {"merged": "export_merged", "gguf": "export_gguf", "ollama": "export_ollama",
            "space": "export_space"}[target]
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{name}":
            raise
        raise ExportError(msg("export.target_missing", target=target, module=f"lora_studio/{name}.py"), target,
                          msg("export.target_missing_fix")) from None


def known_quants() -> tuple[str, ...]:
    """The quants the GGUF export offers (export_gguf.QUANTS); () when it is not installed."""
    try:
        module = _target_module("gguf")
    except ExportError:
        return ()
    return tuple(getattr(module, "QUANTS", ()))


def check_request(request: ExportRequest) -> None:
    """Refuse an unknown target or quant before anything is read or written."""
    if request.target not in TARGETS:
        raise ExportError(msg("export.unknown_target", target=request.target), "--to",
                          msg("export.unknown_target_fix", known=", ".join(TARGETS)))
    if request.target in QUANT_TARGETS:
        _target_module("gguf")  # a missing GGUF export is said as such, not as an unknown quant
        quants = known_quants()
        if request.quant not in quants:
            raise ExportError(msg("export.unknown_quant", quant=request.quant), "--quant",
                              msg("export.unknown_quant_fix", known=", ".join(quants)))


def is_export(folder: Path) -> bool:
    """Whether a folder is a whole export of ours (published only with its verify.json and export.json)."""
    return (Path(folder) / "verify.json").is_file() and (Path(folder) / "export.json").is_file()


def check_out(out: Path) -> None:
    """An export replaces only an earlier export (or an empty folder): never a folder of the user's."""
    if out.is_symlink() or out.is_file() or (out.is_dir() and any(out.iterdir()) and not is_export(out)):
        raise ExportError(msg("export.out_not_export"), str(out), msg("export.out_not_export_fix"))


def default_out(run_dir: Path, request: ExportRequest) -> Path:
    name = f"{request.target}-{request.quant}" if request.target in QUANT_TARGETS else request.target
    return Path(run_dir) / "exports" / name


def resolve_adapter(run_dir: Path, given: Path | None) -> Path:
    """The adapter an export takes: the one given, else the marked best checkpoint, else the newest."""
    from .checkpoints import adapter_is_complete
    from .runs import adapter_dirs

    if given is not None:
        given = Path(given).expanduser()
        if not given.is_absolute() and not given.exists():  # "adapter", "checkpoint-2": inside the run
            inside = [Path(run_dir) / given, Path(run_dir) / "checkpoints" / given]
            given = next((p for p in inside if p.exists()), inside[0])
        if not adapter_is_complete(given):
            raise ExportError(msg("export.bad_adapter"), str(given), msg("export.bad_adapter_fix"))
        return given
    try:
        from .probes import best_adapter
    except ImportError:  # evaluation (probes.py) is not installed: no best checkpoint can be marked
        best_adapter = None
    best = best_adapter(run_dir) if best_adapter is not None else None
    if best is not None:
        return Path(best)
    found = adapter_dirs(run_dir)
    if not found:
        raise ExportError(msg("export.no_adapter"), str(run_dir), msg("export.no_adapter_fix"))
    return found[0]


class ExportJob(Job):
    """One export in a thread of its own; `events` carries its progress and outcome, `out` is where it lands."""
    thread_name = "lora-studio-export"

    def __init__(self, request: ExportRequest, workspace: Workspace, trust_remote_code: bool = False,
                 events=None):
        from .chat import run_config_for
        from .runs import find_run

        super().__init__(events)
        check_request(request)
        self.workspace = workspace
        self.trust_remote_code = trust_remote_code  # the user's consent in this session, never a file's
        self.run_dir = find_run(request.run, workspace)
        self.adapter = resolve_adapter(self.run_dir, request.adapter)
        self.config = run_config_for(self.adapter)
        self.out = Path(request.out).expanduser().absolute() if request.out else default_out(self.run_dir, request)
        self.request = replace(request, run=self.run_dir, out=self.out)  # what builders see: resolved
        self.staging = self.out.with_name(f".{self.out.name}{PARTIAL}{os.getpid()}")
        check_out(self.out)
        self.verify: dict | None = None
        self.context = None
        self.thread_name = f"export {self.run_dir.name} -> {request.target}"

    def describe(self) -> str:
        return f"{self.run_dir.name} -> {self.request.target}"

    # --- the Job hooks ---------------------------------------------------------------------------
    def prepare(self) -> None:
        from .workspace import writable_folder

        writable_folder(self.out.parent)

    def work(self) -> str:
        started = time.perf_counter()
        try:
            self._stage(0)
            ctx = self._context()
            self._check_disk(ctx)
            self._stage(1)
            artifact = builder_for(self.request.target)(ctx)
            self.check_stop()
            self._stage(2)
            from .export_verify import prove, write_verify

            self.verify = prove(ctx, Path(artifact))
            write_verify(self.verify, self.staging)
            self._write_manifest(ctx, Path(artifact), time.perf_counter() - started)
            self.check_stop()
            self._stage(3)
            self._publish()
        except ExportStopped:
            return "stopped"
        except Exception as exc:  # the OS's ENOSPC, safetensors' "os error 28", torch's short write
            if not isinstance(exc, StudioError) and disk.is_disk_full(exc, self.out.parent):
                disk.release_files(exc)
                self._clean_up()
                raise self._disk_full() from exc
            raise
        finally:
            self._clean_up()
        return "completed"

    def finished_event(self, status: str) -> Finished:
        if status != "completed" or self.verify is None:
            return Finished(status=status, output="", text=msg("export.stopped_nothing_left", path=str(self.out)))
        from .export_verify import verdict_msg

        return Finished(status=status, output=str(self.out),
                        text=msg("export.finished", path=str(self.out), verdict=verdict_msg(self.verify)))

    # --- steps -----------------------------------------------------------------------------------
    def _context(self):
        from .export_context import ExportContext
        from .models import renderer_for

        self._tidy_leftovers()
        renderer = renderer_for(self.config, self.workspace, trust_remote_code=self.trust_remote_code)
        self.check_stop()
        self.staging.mkdir(parents=True)
        self.emit(Log(msg("export.starting", target=self.request.target, run=self.run_dir.name,
                          adapter=str(self.adapter))))
        self.context = ExportContext(
            request=self.request, workspace=self.workspace, config=self.config, adapter=self.adapter,
            staging=self.staging, renderer=renderer, trust_remote_code=self.trust_remote_code,
            log=lambda text: self.emit(Log(text)), progress=self._progress, check_stop=self.check_stop)
        return self.context

    def check_stop(self) -> None:
        if self.stop_requested:
            raise ExportStopped()

    def _stage(self, index: int) -> None:
        self.check_stop()
        self.emit(ExportProgress(stage=STAGES[index], done=index, total=len(STAGES)))

    def _progress(self, stage: str, done: int, total: int) -> None:
        msg(stage)  # a builder's stage is a catalogue key: a typo fails here, not in a front end
        self.emit(ExportProgress(stage=stage, done=done, total=total))

    def _check_disk(self, ctx) -> None:
        needed = estimate_bytes(ctx)
        free = disk.free_bytes(self.out.parent)
        if free is not None and needed + DISK_MARGIN_BYTES > free:
            from .hub_local import format_bytes

            raise ExportError(msg("export.not_enough_disk", needed=format_bytes(needed), free=format_bytes(free)),
                              str(self.out.parent),
                              msg("export.not_enough_disk_fix", more=format_bytes(needed + DISK_MARGIN_BYTES - free)))

    def _disk_full(self) -> ExportError:
        from .hub_local import format_bytes

        needed = estimate_bytes(self.context) if self.context is not None else 0
        return ExportError(msg("export.disk_full", free=format_bytes(disk.free_bytes(self.out.parent) or 0)),
                           str(self.out.parent), msg("export.disk_full_fix", needed=format_bytes(needed)))

    def _write_manifest(self, ctx, artifact: Path, seconds: float) -> None:
        import json

        from . import __version__
        from .config import Setting
        from .files import write_text_atomic

        manifest = {"target": self.request.target, "quant": self.request.quant if self.request.target
                    in QUANT_TARGETS else None, "run": str(self.run_dir), "adapter": str(self.adapter),
                    "base_model": self.config.model_name_or_path, "artifact": artifact.name,
                    str(Setting.chat_template_kwargs): dict(ctx.renderer.template_kwargs),
                    str(Setting.system_prompt): ctx.renderer.system_prompt, "stop_token_ids": list(ctx.renderer.stop_token_ids),
                    "seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "lora_studio_version": __version__}
        write_text_atomic(self.staging / "export.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")

    def _publish(self) -> None:
        """Rename the whole staging folder to `out`; an export already there is swapped out, then deleted."""
        for file in self.staging.rglob("*"):
            if file.is_file():
                file.chmod(file.stat().st_mode | 0o044)  # temp files are private; an export is to share
                _fsync(file)
        old = None
        if self.out.exists() or self.out.is_symlink():
            old = self.out.with_name(f".{self.out.name}{OLD}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        _fsync(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
            self.emit(Log(msg("export.replaced", path=str(self.out))))
        size = disk.folder_bytes(self.out)
        from .hub_local import format_bytes

        self.emit(Log(msg("export.published", path=str(self.out), size=format_bytes(size))))
        self.emit(ExportProgress(stage=STAGES[3], done=len(STAGES), total=len(STAGES)))

    def _clean_up(self) -> None:
        """Remove the staging folder (unless published) and the merged scratch folder."""
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        scratch = getattr(self.context, "_merged", None)
        if scratch is not None and Path(scratch).exists() and Path(scratch) != self.out:
            shutil.rmtree(scratch, ignore_errors=True)

    def _tidy_leftovers(self) -> None:
        """What a killed export left next to `out`: its staging folders (their process gone) are removed;
        an earlier export it had moved aside for the swap goes back in place if `out` is missing."""
        if not self.out.parent.is_dir():
            return
        prefix = f".{self.out.name}{PARTIAL}"
        for folder in self.out.parent.glob(prefix + "*"):
            pid = folder.name[len(prefix):].split("-")[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not _process_alive(int(pid))):
                shutil.rmtree(folder, ignore_errors=True)
        olds = sorted(self.out.parent.glob(f".{self.out.name}{OLD}*"))
        if olds and not self.out.exists() and is_export(olds[-1]):
            os.replace(olds.pop(), self.out)
            self.emit(Log(msg("export.restored", path=str(self.out)), level="warning"))
        for old in olds if self.out.exists() else ():
            shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a power cut after the rename keeps it whole."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():  # a file's error is the disk's; some systems cannot sync a folder
            raise
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def estimate_bytes(ctx) -> int:
    """What the export writes at its fullest: the merged weights (and the GGUF beside them), or the adapter."""
    if ctx.request.target == "space":
        return disk.folder_bytes(ctx.adapter) + 1_000_000
    from .export_merged import merged_bytes

    params, total = merged_bytes(ctx)
    if ctx.request.target in QUANT_TARGETS:
        quant = ctx.request.quant.lower()
        total += params * GGUF_BYTES_PER_PARAM.get(quant, 2.0)
        if quant not in getattr(_target_module("gguf"), "CONVERTER_QUANTS", (quant,)):
            total += params * GGUF_BYTES_PER_PARAM["f16"]  # the f16 GGUF the quantizer reads
    return int(total)


def read_verify(out_dir: Path) -> dict:
    """The proof table an export wrote (verify.json inside it)."""
    from .export_verify import read_verify as read

    return read(out_dir)
