"""TrainingJob: one LoRA fine-tuning run, a `jobs.Job` in its own thread, reporting typed events.

    job = TrainingJob(config, workspace).start()   # or TrainingJob.resume(run_dir, workspace)
    job.run_dir                                    # exists (with config.yaml, command.sh) once start() returns
    for event in job.events.since(0):              # poll without blocking: Progress, Log, Finished, Failed
        ...
    job.stop()                                     # cooperative: the step ends, a checkpoint and the adapter are saved

The same events go to `events.jsonl` in the run directory. Under torchrun every rank trains, and only
rank 0 writes the run directory. A process runs one at a time through a `jobs.JobSlot`.

A crash never costs more than the steps since the last checkpoint: checkpoints appear only when whole
(checkpoints.py), a resume sets torn ones aside, continues from the newest whole one and replaces the
lost steps' events, and a full disk is reported as one (disk.py) with the partial checkpoint set aside.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Mapping

from . import pickles
from .checkpoints import checkpoint_number, save_adapter, set_aside_torn
from .config import RunConfig, save_yaml
from .disk import disk_full_error, folder_bytes, is_disk_full, release_files
from .errors import JobError, StudioError
from .events import Failed, Finished, Log, Progress, drop_steps_after
from .files import write_text_atomic
from .i18n import language_from_env, msg, text
from .jobs import Job
from .resume import resume_changes, saved_config
from .runs import create_run_dir, find_run, latest_checkpoint, read_run, resolved_config
from .runtime import World
from .workspace import Workspace, ensure_writable, writable_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where studio.py is, for command.sh


class TrainingJob(Job):
    thread_name = "lora-studio-training"

    def __init__(self, config: RunConfig, workspace: Workspace, run_dir: Path | None = None,
                 resume: bool = False, callbacks: list | None = None, trust_remote_code: bool = False):
        super().__init__()
        self.config, self.workspace = config, workspace
        self.run_dir = Path(run_dir) if run_dir else None
        self.resuming = resume
        self.extra_callbacks = list(callbacks or [])
        self.trust_remote_code = trust_remote_code  # the user's consent in this session, never a file's
        self.world = World.from_env()
        self.checksum = 0.0
        self.changes: dict = {}              # settings a resume changed: name -> (was, now)
        self.checkpoint: Path | None = None  # the whole checkpoint a resume continues from
        self._checkpoint_size: int | None = None  # estimated bytes of one checkpoint, once the model is known
        self._error_logged = False
        self._result: tuple[int, float | None] = (0, None)  # (last step, last loss)

    @classmethod
    def resume(cls, run_dir: Path | str, workspace: Workspace, callbacks: list | None = None,
               trust_remote_code: bool = False, overrides: Mapping | None = None) -> "TrainingJob":
        """A job that continues a run (a folder, or a run's name) from its newest whole checkpoint.

        `overrides` changes settings for the rest of the run: only those in resume.RESUMABLE_SETTINGS,
        others are refused by name (resume.resume_changes).
        """
        run_dir = find_run(run_dir, workspace)
        saved = saved_config(run_dir)
        info = read_run(run_dir)
        if info.status == "completed":
            raise JobError(msg("training.already_completed", steps=info.step), str(run_dir),
                           msg("training.already_completed_fix"))
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise JobError(msg("training.no_checkpoint"), str(run_dir), msg("training.no_checkpoint_fix"))
        config, changes = resume_changes(saved, overrides or {}, checkpoint_number(checkpoint))
        job = cls(config, workspace, run_dir=run_dir, resume=True, callbacks=callbacks,
                  trust_remote_code=trust_remote_code)
        job.changes = changes
        return job

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    # --- the Job hooks ---------------------------------------------------------------------------
    def prepare(self) -> None:
        from .quantization import check_available
        from .recipe import check_early_stopping
        from .trackers import check_installed

        check_early_stopping(self.config)  # refused before a run folder exists
        check_installed(self.config)       # the tracker's package
        check_available(self.config)       # bitsandbytes runs here, when the base is quantised
        try:
            if not self.resuming:
                ensure_writable(self.workspace, self.workspace.runs)
                if self.run_dir is not None:  # `train --run-dir`: the studio's launcher made it for every rank
                    writable_folder(self.run_dir)
                else:
                    self.run_dir = _shared_run_dir(self.config, self.workspace, self.world) \
                        if self.world.distributed else create_run_dir(self.config, self.workspace)
            else:
                writable_folder(self.run_dir)
            if self.is_main and self.resuming:
                self._continue_run()
            elif self.is_main:
                self._start_run()
        except OSError as exc:
            if is_disk_full(exc, self.run_dir or self.workspace.runs):
                raise self._disk_full(exc) from exc
            raise

    def work(self) -> str:
        try:
            return self._train()
        except Exception as exc:
            if "out of memory" in str(exc).lower():  # torch's OutOfMemoryError, or a backend's RuntimeError
                raise JobError(msg("training.out_of_memory"), self.run_dir.name,
                               msg("training.out_of_memory_fix")) from exc
            if self.is_main and is_disk_full(exc, self.run_dir):
                raise self._disk_full(exc) from exc
            raise

    def emit(self, event) -> None:
        try:
            super().emit(event)
        except OSError:
            # EventLog holds the event before it writes the file, so the CLI and the studio still show
            # it; the report of a failure (or an end) must not fail for the file. A step's event raises:
            # a full disk ends the run at its last checkpoint.
            if self.state != "failed" and not isinstance(event, (Failed, Finished)):
                raise

    def finished_event(self, status: str) -> Finished:
        step, loss = self._result
        return Finished(status=status, output=str(self.run_dir / "adapter"), step=step, loss=loss)

    def on_failure(self, exc: BaseException) -> None:
        if not self.is_main or self.run_dir is None or self._error_logged:
            return
        error_log = self._write_error_log(exc)
        if error_log is not None and (not isinstance(exc, StudioError) or exc.__cause__ is not None):
            self.emit(Log(msg("training.error_log", path=str(error_log)), level="warning"))

    def current_step(self) -> int:
        last = self.events.last(Progress)
        if last is not None:
            return last.step
        return checkpoint_number(self.checkpoint) if self.checkpoint is not None else 0

    def describe(self) -> str:
        return self.run_dir.name if self.run_dir is not None else self.thread_name

    def summary(self):
        """One line per rank under torchrun: the steps taken and a fingerprint of the LoRA weights."""
        return msg("training.summary", steps=self.current_step(), checksum=self.checksum)

    # --- the run folder --------------------------------------------------------------------------
    def _start_run(self) -> None:
        self.events.path = self.run_dir / "events.jsonl"
        save_yaml(resolved_config(self.config, self.run_dir.name), self.run_dir / "config.yaml")
        command = write_text_atomic(self.run_dir / "command.sh", reproduce_command(self.run_dir, self.workspace))
        os.chmod(command, 0o755)

    def _continue_run(self) -> None:
        """Set torn checkpoints aside, pick the newest whole one, and forget the steps after it."""
        torn = set_aside_torn(self.run_dir)
        self.checkpoint = latest_checkpoint(self.run_dir)
        if self.checkpoint is None:
            raise JobError(msg("training.no_checkpoint"), str(self.run_dir), msg("training.no_checkpoint_fix"))
        step = checkpoint_number(self.checkpoint)
        kept = [e for e in drop_steps_after(self.run_dir / "events.jsonl", step) if isinstance(e, Progress)]
        if kept:  # before the file is attached: the live view starts at the run's real step (the file has it)
            self.events.emit(dataclasses.replace(kept[-1], eta=None))  # that session's ETA is no guide
        self.events.path = self.run_dir / "events.jsonl"
        for path in torn:
            self.emit(Log(msg("training.torn_set_aside", path=str(path)), level="warning"))
        self.emit(Log(msg("training.resuming_from", checkpoint=self.checkpoint.name, step=step)))
        for name, (was, now) in self.changes.items():
            self.emit(Log(msg("training.resume_changed", name=name, was=was, now=now)))
        if self.changes:  # a later resume continues with them too
            save_yaml(self.config, self.run_dir / "config.yaml")

    def _write_error_log(self, exc: BaseException) -> Path | None:
        """error.log with the traceback; None when it cannot be written (a full disk)."""
        self._error_logged = True
        try:
            return write_text_atomic(self.run_dir / "error.log", "".join(traceback.format_exception(exc)))
        except OSError:
            return None

    def _disk_full(self, exc: BaseException) -> JobError:
        """The full-disk message, once the torn checkpoint is set aside and error.log tried."""
        torn, error_log = [], None
        if self.run_dir is not None and self.is_main:
            try:
                torn = set_aside_torn(self.run_dir)
            except OSError:
                pass
            error_log = self._write_error_log(exc)
        release_files(exc)
        newest = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
        return disk_full_error(self.run_dir or self.workspace.runs,
                               folder_bytes(newest) if newest is not None else self._checkpoint_size,
                               self.run_dir.name if newest is not None else None, torn[-1] if torn else None,
                               error_log)

    # --- the run ---------------------------------------------------------------------------------
    def _train(self) -> str:
        from . import models
        from .recipe import assemble_run
        from .trainer_setup import encode_data

        self.emit(Log(msg("training.loading_model", model=self.config.model_name_or_path)))
        loaded = models.load(self.config, self.workspace, trust_remote_code=self.trust_remote_code)
        data = encode_data(self.config, loaded.renderer)
        self.emit(Log(data.summary(self.config)))
        if not loaded.renderer.trains_history_turns:  # e.g. a Qwen3-style template: say what is trained
            self.emit(Log(msg("training.last_answers_only"), level="warning"))
        if self.stop_requested:
            return "stopped"
        from .launch_job import stop_file_callback  # run/STOP (the studio's launcher) stops every rank alike

        recipe = assemble_run(self.config, loaded.model, loaded.tokenizer, data, self.run_dir / "checkpoints",
                              self.emit, lambda: self.stop_requested,
                              [*self.extra_callbacks, stop_file_callback(self.run_dir, self.stop)])
        total = self._check_disk(recipe.model, len(data.train), loaded.path)
        checkpoint = (self.checkpoint or latest_checkpoint(self.run_dir)) if self.resuming else None
        if checkpoint is not None and checkpoint_number(checkpoint) >= total:
            return self._finish_from(checkpoint)
        trainer = recipe.trainer(data)
        with pickles.explained(checkpoint, "checkpoint"):  # a refused pickle is named, not an internal error
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if trainer.is_world_process_zero():
            save_adapter(recipe.model, loaded.tokenizer, self.run_dir)
        best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
        if best is not None:  # early stopping: the Trainer loaded the best checkpoint back before the save
            self.emit(Log(msg("training.best_adapter", checkpoint=Path(best).name, loss=trainer.state.best_metric)))
        self.checksum = float(sum(p.detach().float().abs().sum() for p in recipe.model.parameters()
                                  if p.requires_grad))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        self._result = (trainer.state.global_step, losses[-1] if losses else result.training_loss)
        stopped = self.stop_requested and trainer.state.global_step < trainer.state.max_steps
        return "stopped" if stopped else "completed"

    def _finish_from(self, checkpoint: Path) -> str:
        """Every step was trained and saved, and the crash came before adapter/: it is the checkpoint's
        (with early stopping, the best checkpoint's).

        (The Trainer, resumed at its last step, would train one step more.)
        """
        import json

        from safetensors.torch import load_file

        from .checkpoints import adapter_from_checkpoint, is_complete

        step = checkpoint_number(checkpoint)
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        best = Path(state.get("best_model_checkpoint") or checkpoint)
        source = best if self.config.early_stopping_patience and is_complete(best) else checkpoint
        if self.is_main:
            adapter_from_checkpoint(source, self.run_dir)
        self.emit(Log(msg("training.finished_from_checkpoint", step=step, checkpoint=source.name)))
        weights = load_file(str(source / "adapter_model.safetensors"))
        self.checksum = float(sum(t.float().abs().sum() for t in weights.values()))
        history = state["log_history"]
        losses = [entry["loss"] for entry in history if "loss" in entry]
        self._result = (step, losses[-1] if losses else None)
        return "completed"

    def _check_disk(self, model, examples: int, model_path: Path) -> int:
        """Warn before the first step when the run's checkpoints will not fit (the dry run's disk line);
        returns the run's optimizer steps."""
        from .disk import disk_need, tokenizer_bytes
        from .estimate import optimizer_steps
        from .hub_local import format_bytes

        steps = optimizer_steps(examples, self.config, self.world.world_size)[1]
        need = disk_need(model.get_nb_trainable_parameters()[0], steps, self.config.save_steps,
                         self.config.save_total_limit, tokenizer_bytes(model_path), self.run_dir)
        self._checkpoint_size = need.checkpoint
        if self.is_main and need.short:
            self.emit(Log(msg("training.disk_short", needed=format_bytes(need.total), free=format_bytes(need.free),
                              where=need.where), level="warning"))
        return steps


def reproduce_command(run_dir: Path, workspace: Workspace) -> str:
    """command.sh: the same settings again, from any directory, in this workspace, by this Python."""
    lines = [
        "#!/bin/sh",
        f"# {text('training.command_comment', language_from_env())}",
        *(f"export {name}={shlex.quote(value)}" for name, value in workspace.environ().items()),
        f"cd {shlex.quote(str(PROJECT_ROOT))} || exit 1",
        f"exec {shlex.quote(sys.executable)} studio.py train {shlex.quote(str(run_dir / 'config.yaml'))} \"$@\"",
    ]
    return "\n".join(lines) + "\n"


def _shared_run_dir(config: RunConfig, workspace: Workspace, world: World) -> Path:
    """Under torchrun: rank 0 creates the run folder and tells the other ranks its name."""
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # initialises the process group the Trainer will use
    holder = [str(create_run_dir(config, workspace)) if world.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])
