"""TrainingJob: one LoRA fine-tuning run, a `jobs.Job` in its own thread, reporting typed events.

    job = TrainingJob(config, workspace).start()   # or TrainingJob.resume(run_dir, workspace)
    job.run_dir                                    # exists (with config.yaml, command.sh) once start() returns
    for event in job.events.since(0):              # poll without blocking: Progress, Log, Finished, Failed
        ...
    job.stop()                                     # cooperative: the step ends, a checkpoint and the adapter are saved

The same events go to `events.jsonl` in the run directory. Under torchrun every rank trains, and only
rank 0 writes the run directory. A process runs one at a time through a `jobs.JobSlot`.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from pathlib import Path

from .config import RunConfig, load_yaml, save_yaml
from .errors import JobError, StudioError
from .events import Finished, Log, Progress
from .files import write_text_atomic
from .i18n import language_from_env, msg, text
from .jobs import Job
from .runs import create_run_dir, latest_checkpoint, read_run
from .runtime import World
from .workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where studio.py is, for command.sh


class TrainingJob(Job):
    thread_name = "lora-studio-training"

    def __init__(self, config: RunConfig, workspace: Workspace, run_dir: Path | None = None,
                 resume: bool = False, callbacks: list | None = None):
        super().__init__()
        self.config, self.workspace = config, workspace
        self.run_dir = Path(run_dir) if run_dir else None
        self.resuming = resume
        self.extra_callbacks = list(callbacks or [])
        self.world = World.from_env()
        self.checksum = 0.0
        self._result: tuple[int, float | None] = (0, None)  # (last step, last loss)

    @classmethod
    def resume(cls, run_dir: Path, workspace: Workspace, callbacks: list | None = None) -> "TrainingJob":
        """A job that continues `run_dir` from its latest checkpoint, appending to its events."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise JobError(msg("training.not_a_run"), str(run_dir), msg("training.not_a_run_fix"))
        info = read_run(run_dir)
        if info.status == "completed":
            raise JobError(msg("training.already_completed", steps=info.step), str(run_dir),
                           msg("training.already_completed_fix"))
        if latest_checkpoint(run_dir) is None:
            raise JobError(msg("training.no_checkpoint"), str(run_dir), msg("training.no_checkpoint_fix"))
        return cls(load_yaml(run_dir / "config.yaml"), workspace, run_dir=run_dir, resume=True,
                   callbacks=callbacks)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    # --- the Job hooks ---------------------------------------------------------------------------
    def prepare(self) -> None:
        if not self.resuming:
            self.run_dir = _shared_run_dir(self.config, self.workspace, self.world) if self.world.distributed \
                else create_run_dir(self.config, self.workspace)
        if self.is_main:
            self.events.path = self.run_dir / "events.jsonl"
            if not self.resuming:
                self._write_run_files()

    def work(self) -> str:
        try:
            return self._train()
        except Exception as exc:
            if "out of memory" in str(exc).lower():  # torch's OutOfMemoryError, or a backend's RuntimeError
                raise JobError(msg("training.out_of_memory"), self.run_dir.name,
                               msg("training.out_of_memory_fix")) from exc
            raise

    def finished_event(self, status: str) -> Finished:
        step, loss = self._result
        return Finished(status=status, output=str(self.run_dir / "adapter"), step=step, loss=loss)

    def on_failure(self, exc: BaseException) -> None:
        if not self.is_main or self.run_dir is None:
            return
        error_log = self.run_dir / "error.log"
        error_log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        if not isinstance(exc, StudioError) or exc.__cause__ is not None:
            self.emit(Log(msg("training.error_log", path=str(error_log)), level="warning"))

    def current_step(self) -> int:
        last = self.events.last(Progress)
        return last.step if last else 0

    def describe(self) -> str:
        return self.run_dir.name if self.run_dir is not None else self.thread_name

    def summary(self):
        """One line per rank under torchrun: the steps taken and a fingerprint of the LoRA weights."""
        return msg("training.summary", steps=self.current_step(), checksum=self.checksum)

    # --- the run ---------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        resolved = self.config.replace(
            run_name=self.run_dir.name,
            data_files=[str(Path(f).expanduser().resolve()) for f in self.config.data_files])
        save_yaml(resolved, self.run_dir / "config.yaml")
        command = write_text_atomic(self.run_dir / "command.sh", reproduce_command(self.run_dir, self.workspace))
        os.chmod(command, 0o755)

    def _train(self) -> str:
        from . import models
        from .recipe import assemble_run
        from .trainer_setup import encode_data

        self.emit(Log(msg("training.loading_model", model=self.config.model_name_or_path)))
        loaded = models.load(self.config, self.workspace)
        data = encode_data(self.config, loaded.renderer)
        self.emit(Log(data.summary(self.config)))
        if self.stop_requested:
            return "stopped"
        recipe = assemble_run(self.config, loaded.model, loaded.tokenizer, data, self.run_dir / "checkpoints",
                              self.emit, lambda: self.stop_requested, self.extra_callbacks)
        trainer = recipe.trainer(data)
        checkpoint = latest_checkpoint(self.run_dir) if self.resuming else None
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if trainer.is_world_process_zero():
            adapter = self.run_dir / "adapter"
            recipe.model.save_pretrained(str(adapter))
            loaded.tokenizer.save_pretrained(str(adapter))
        self.checksum = float(sum(p.detach().float().abs().sum() for p in recipe.model.parameters()
                                  if p.requires_grad))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        self._result = (trainer.state.global_step, losses[-1] if losses else result.training_loss)
        stopped = self.stop_requested and trainer.state.global_step < trainer.state.max_steps
        return "stopped" if stopped else "completed"


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
