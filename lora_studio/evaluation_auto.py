"""AutoEvaluation: the studio starts an evaluation by itself, after a training run or between its saves.

"after": once the studio's training job ends (completed or stopped), an EvalJob with metrics runs on
its run. "between" (GPU only): as soon as a training job runs, an EvalJob follows it and evaluates
each checkpoint while the next one trains (evaluation.EvalRequest.follow); on a CPU that would share
the cores training uses and slow it down, so it is refused. A run that had already ended when the
mode was turned on is left alone. A thread of its own polls the two job slots, so this works with
no page open.
"""

from __future__ import annotations

import logging
import threading

from .errors import JobError
from .evaluation import FOLLOW_POLL_S, EvalJob, EvalRequest, between_saves_available
from .i18n import msg
from .jobs import JobSlot

LOG = logging.getLogger("lora_studio.evaluation")


class AutoEvaluation:
    """Starts an EvalJob in `evaluations` for the job in `training`, as `mode` says (see the module docstring)."""

    MODES = ("off", "after", "between")

    def __init__(self, training: JobSlot, evaluations: JobSlot, workspace, interval: float = FOLLOW_POLL_S):
        self.training, self.evaluations, self.workspace, self.interval = training, evaluations, workspace, interval
        self.mode = "off"
        self.last_error: BaseException | None = None  # why the last automatic start was refused
        self._handled = None  # the training job last handled (the slot holds one job at a time)
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None

    def set_mode(self, mode: str, watch: bool = True) -> None:
        if mode not in self.MODES:
            raise JobError(msg("evaluation.bad_mode", mode=mode, modes=", ".join(self.MODES)), msg("evaluation.where"))
        if mode == "between" and not between_saves_available():
            raise JobError(msg("evaluation.between_saves_cpu"), msg("evaluation.where"),
                           msg("evaluation.between_saves_cpu_fix"))
        with self._lock:
            job = self.training.job
            if self.mode == "off" and job is not None and not job.is_active:
                self._handled = job
            self.mode = mode
        if watch and mode != "off" and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._watch, name="lora-studio-auto-eval", daemon=True)
            self._thread.start()

    def poll(self) -> EvalJob | None:
        """Start the evaluation the mode asks for, if it is due; the job started, else None."""
        with self._lock:
            job, mode = self.training.job, self.mode
            if mode == "off" or job is None or job is self._handled or getattr(job, "run_dir", None) is None:
                return None
            follow = mode == "between" and job.is_active
            if job.is_active and not follow:
                return None
            running = self.evaluations.job
            if running is not None and running.is_active:
                return None  # at the next poll
            self._handled = job
            if not follow and job.state not in ("completed", "stopped"):
                return None
            request = EvalRequest(job.run_dir, metrics=True, follow=follow)
            try:
                return self.evaluations.launch(lambda: EvalJob(request, self.workspace, getattr(
                    job, "trust_remote_code", False), training=job))
            except Exception as exc:  # noqa: BLE001 - a run that cannot be evaluated must not stop the watcher
                self.last_error = exc
                return None

    def close(self) -> None:
        self._quit.set()

    def _watch(self) -> None:
        while not self._quit.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - keep watching; the console keeps the traceback
                LOG.exception("automatic evaluation")
