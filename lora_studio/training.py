"""TrainingJob: one LoRA fine-tuning run in a background thread, reporting typed events.

    job = TrainingJob(config)          # or TrainingJob.resume(run_dir)
    job.start()                        # returns at once; the run directory exists from here on
    for event in job.events.since(0):  # poll without blocking: Progress, Log, Finished, Failed
        ...
    job.stop()                         # cooperative: the step ends, a checkpoint and the adapter are saved

The same events go to `events.jsonl` in the run directory. Under torchrun every rank trains, and only
rank 0 writes the run directory. `JobSlot` holds the one job a process may run at a time.
"""

from __future__ import annotations

import os
import shlex
import threading
import traceback
from pathlib import Path

from .config import RunConfig, load_yaml, save_yaml
from .errors import JobError, StudioError
from .events import EventLog, Failed, Finished, Log
from .runs import create_run_dir, latest_checkpoint, read_run

ACTIVE_STATES = ("pending", "running", "stopping")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


class TrainingJob:
    def __init__(self, config: RunConfig, run_dir: Path | None = None, resume: bool = False,
                 callbacks: list | None = None):
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else None
        self.resuming = resume
        self.extra_callbacks = list(callbacks or [])
        self.state = "pending"
        self.events = EventLog()
        self.is_main = _rank() == 0
        self._stop = threading.Event()
        self.checksum = 0.0
        self._thread: threading.Thread | None = None

    @classmethod
    def resume(cls, run_dir: Path, callbacks: list | None = None) -> "TrainingJob":
        """A job that continues `run_dir` from its latest checkpoint, appending to its events."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise JobError("not a run directory (no config.yaml)", str(run_dir),
                           "Pick a folder under the workspace's runs/.")
        info = read_run(run_dir)
        if info.status == "completed":
            raise JobError(f"this run already completed all {info.step} steps", str(run_dir),
                           "Start a new run (with more epochs or max_steps) to train further.")
        if latest_checkpoint(run_dir) is None:
            raise JobError("this run saved no checkpoint to resume from", str(run_dir),
                           "Start a new run, or use a smaller save_steps next time.")
        return cls(load_yaml(run_dir / "config.yaml"), run_dir=run_dir, resume=True, callbacks=callbacks)

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> Path:
        if self.state != "pending":
            raise JobError(f"this job has already been started (it is {self.state})", "training")
        self.run_dir = self._prepare_run_dir()
        if self.is_main:
            self.events.path = self.run_dir / "events.jsonl"
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="lora-studio-training", daemon=True)
        self._thread.start()
        return self.run_dir

    def stop(self) -> None:
        """Ask the run to stop after the current step; the adapter is kept."""
        if self.state in ("pending", "running"):
            self._stop.set()
            self.state = "stopping"

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_active

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES and (self._thread is None or self._thread.is_alive()
                                                or self.state == "pending")

    def summary(self) -> str:
        """One line per rank under torchrun: the steps taken and a fingerprint of the LoRA weights."""
        return f"{self._step()} optimizer steps, LoRA weight checksum {self.checksum:.6f}"

    def emit(self, event) -> None:
        self.events.emit(event)

    # --- the thread ------------------------------------------------------------------------------
    def _prepare_run_dir(self) -> Path:
        if self.resuming:
            return self.run_dir
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return _shared_run_dir(self.config)
        return create_run_dir(self.config)

    def _run(self) -> None:
        try:
            if not self.resuming and self.is_main:
                self._write_run_files()
            status, step, loss = self._train()
            self.state = status
            self.emit(Finished(status=status, output=str(self.run_dir / "adapter"), step=step, loss=loss))
        except BaseException as exc:  # noqa: BLE001 - any failure must become an event, not a crash
            self.state = "failed"
            self.emit(Failed(message=_describe(exc), step=self._step()))
            if self.is_main and self.run_dir is not None:
                (self.run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")

    def _write_run_files(self) -> None:
        resolved = self.config.replace(
            run_name=self.run_dir.name,
            data_files=[str(Path(f).expanduser().resolve()) for f in self.config.data_files])
        save_yaml(resolved, self.run_dir / "config.yaml")
        command = f"python studio.py train {shlex.quote(str(self.run_dir / 'config.yaml'))}\n"
        (self.run_dir / "command.sh").write_text(
            "#!/bin/sh\n# Reproduces this run (into a new run folder; this one is never overwritten).\n"
            + command, encoding="utf-8")

    def _step(self) -> int:
        from .events import Progress

        last = self.events.last(Progress)
        return last.step if last else 0

    def _train(self) -> tuple[str, int, float | None]:
        from transformers import Trainer
        from transformers.trainer_callback import PrinterCallback

        from . import models
        from .estimate import lora_config
        from .trainer_setup import encode_data, make_collator, make_event_callback, training_arguments

        self.emit(Log(f"Loading model {self.config.model_name_or_path}"))
        loaded = models.load(self.config)
        data = encode_data(self.config, loaded.renderer)
        self.emit(Log(f"Data: {data.records} records, {data.duplicates_removed} duplicates removed, "
                      f"{len(data.train)} training examples"
                      + (f", {len(data.eval)} validation" if data.eval is not None else "")
                      + f", {data.truncated} truncated at cutoff_len {self.config.cutoff_len}"
                      + (f", {data.skipped} skipped (nothing left to train)" if data.skipped else "")))
        if self._stop.is_set():
            return "stopped", 0, None
        from peft import get_peft_model

        model = loaded.model
        model.config.use_cache = False  # a cache in train() disables the packed-sequence mask
        checkpointing = self._gradient_checkpointing(model, len(data.train))
        model = get_peft_model(model, lora_config(self.config, model))
        trainable, total = model.get_nb_trainable_parameters()
        self.emit(Log(f"LoRA: {trainable:,} trainable parameters of {total:,} "
                      f"({100 * trainable / total:.2f}%)"))
        collator = make_collator(self.config, model, loaded.tokenizer, lambda m: self.emit(Log(m)))
        callback = make_event_callback(self.emit, collator, self._stop.is_set)
        trainer = Trainer(
            model=model, args=training_arguments(self.config, self.run_dir / "checkpoints", checkpointing,
                                                 data.eval is not None),
            train_dataset=data.train, eval_dataset=data.eval, data_collator=collator,
            # ours runs last, so it sees a stop that any other callback asked for on this step
            processing_class=loaded.tokenizer, callbacks=[*self.extra_callbacks, callback])
        trainer.remove_callback(PrinterCallback)  # our Log events already carry every logged value
        checkpoint = latest_checkpoint(self.run_dir) if self.resuming else None
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if trainer.is_world_process_zero():
            adapter = self.run_dir / "adapter"
            model.save_pretrained(str(adapter))
            loaded.tokenizer.save_pretrained(str(adapter))
        self.checksum = float(sum(p.detach().float().abs().sum() for p in model.parameters()
                                  if p.requires_grad))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        stopped = self._stop.is_set() and trainer.state.global_step < trainer.state.max_steps
        final_loss = losses[-1] if losses else result.training_loss
        return ("stopped" if stopped else "completed"), trainer.state.global_step, final_loss

    def _gradient_checkpointing(self, model, examples: int) -> bool:
        setting = self.config.gradient_checkpointing
        if setting != "auto":
            return bool(setting)
        from .estimate import needs_gradient_checkpointing

        needed, why = needs_gradient_checkpointing(self.config, model)
        self.emit(Log(f"gradient_checkpointing auto: {'on' if needed else 'off'} ({why})"))
        return needed


class JobSlot:
    """Holds the one training job a process runs at a time; a second start is refused."""

    def __init__(self):
        self.job: TrainingJob | None = None
        self._lock = threading.Lock()

    def start(self, config: RunConfig, callbacks: list | None = None) -> TrainingJob:
        return self._launch(lambda: TrainingJob(config, callbacks=callbacks))

    def resume(self, run_dir: Path, callbacks: list | None = None) -> TrainingJob:
        return self._launch(lambda: TrainingJob.resume(run_dir, callbacks=callbacks))

    def _launch(self, make) -> TrainingJob:
        with self._lock:
            if self.job is not None and self.job.is_active:
                raise JobError(f"a training run is already in progress ({self.job.run_dir.name})",
                               "training", "Stop it first, or wait for it to finish.")
            job = make()
            job.start()
            self.job = job
            return job


def _shared_run_dir(config: RunConfig) -> Path:
    """Under torchrun: rank 0 creates the run folder and tells the other ranks its name."""
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # initialises the process group the Trainer will use
    holder = [str(create_run_dir(config)) if _rank() == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StudioError):
        return exc.message
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if "out of memory" in first.lower():
        return ("Out of memory during training. Lower per_device_train_batch_size or cutoff_len, or turn "
                "gradient_checkpointing on; the run's settings are in its config.yaml.")
    return f"Training failed: {type(exc).__name__}: {first} (details in the run's error.log)"
