"""LaunchedTrainingJob: a run trained by a launcher's processes (torchrun, accelerate) that this process follows.

    job = LaunchedTrainingJob(config, workspace, plan).start()   # plan: launch.plan(...)
    job.run_dir, job.events, job.stop(), job.join()              # as a TrainingJob's

The job makes the run folder and its config.yaml, then starts `plan.command(...)` as a child in a
process group of its own: the child's output goes to `launcher.log`, `launch.sh` holds the command of
every node and `launcher.pid` names the process (so a restarted studio still sees the run as running).
Rank 0 writes events.jsonl as in any run; the job reads it by byte offset, whole lines only, into its
own EventLog, so the Train tab shows a launched run as it shows one in this process. The job ends with
the child's Finished or Failed; a child that exits without one becomes a Failed event quoting the end
of its log.

Stop is cooperative first: the job writes `STOP` into the run folder, every rank's stop-file callback
sees it at the end of the same step (the ranks agree through one all_reduce) and the Trainer ends
there, saving a checkpoint and the adapter. Without an end after `stop_timeout` seconds, every process
of the tree is sent SIGTERM, then SIGKILL. The job removes STOP before a session and after it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from .checkpoints import checkpoint_number
from .config import RunConfig, save_yaml
from .errors import JobError
from .events import Event, Failed, Finished, Log, Progress, event_from_json
from .files import write_text_atomic
from .i18n import msg
from .jobs import Job
from .launch import PROJECT_ROOT, SCRIPT_FILE, LaunchPlan, launch_script, train_args
from .runs import create_run_dir, latest_checkpoint, resolved_config
from .workspace import Workspace, ensure_writable, writable_folder

STOP_FILE, LOG_FILE, PID_FILE = "STOP", "launcher.log", "launcher.pid"
STOP_TIMEOUT = 60.0  # seconds a cooperative stop may take (a step and the saves) before the processes are ended
KILL_GRACE = 10.0    # seconds between SIGTERM and SIGKILL
POLL = 0.3           # seconds between two reads of events.jsonl
TAIL_LINES = 15      # lines of launcher.log a failure quotes


class LaunchedTrainingJob(Job):
    thread_name = "lora-studio-launched-training"
    stop_timeout = STOP_TIMEOUT

    def __init__(self, config: RunConfig, workspace: Workspace, plan: LaunchPlan, run_dir: Path | None = None,
                 resume: bool = False, trust_remote_code: bool = False, overrides: dict | None = None,
                 node_rank: int = 0):
        super().__init__()
        self.config, self.workspace, self.plan = config, workspace, plan
        self.run_dir = Path(run_dir) if run_dir else None
        self.resuming, self.trust_remote_code, self.node_rank = resume, trust_remote_code, node_rank
        self.overrides = dict(overrides or {})  # settings a resume changes (resume.RESUMABLE_SETTINGS)
        self.command: list[str] = []
        self.process: subprocess.Popen | None = None
        self._tail: EventTail | None = None
        self._child_end: Finished | Failed | None = None
        self._stop_asked: float | None = None  # time.monotonic() when STOP was written
        self._forced = False

    @classmethod
    def resume_checked(cls, checked, plan: LaunchPlan) -> "LaunchedTrainingJob":
        """The launched twin of a `TrainingJob.resume(...)` job (which checked the run and the changes)."""
        return cls(checked.config, checked.workspace, plan, run_dir=checked.run_dir, resume=True,
                   trust_remote_code=checked.trust_remote_code,
                   overrides={name: now for name, (_was, now) in checked.changes.items()})

    # --- the Job hooks ---------------------------------------------------------------------------
    def prepare(self) -> None:
        from . import quantization, trackers
        from .recipe import check_early_stopping

        check_early_stopping(self.config)
        trackers.check_installed(self.config)  # before a run folder exists, as for in-process runs
        quantization.check_available(self.config)
        if self.resuming:
            writable_folder(self.run_dir)
        else:
            ensure_writable(self.workspace, self.workspace.runs)
            self.run_dir = self.run_dir or create_run_dir(self.config, self.workspace)
            save_yaml(resolved_config(self.config, self.run_dir.name), self.run_dir / "config.yaml")
        (self.run_dir / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier session is no stop now
        arguments = train_args(self.run_dir, self.resuming, self.trust_remote_code, self.overrides)
        self.command = self.plan.command(arguments, self.node_rank)
        script = write_text_atomic(self.run_dir / SCRIPT_FILE, launch_script(self.plan, arguments, self.workspace))
        os.chmod(script, 0o755)
        self._tail = EventTail(self.run_dir / "events.jsonl")
        history = self._tail.read()  # an earlier session's events: the run's history, not this session's news
        self._show_resumed_step(history)
        self._record(Log(msg("launch.starting", launcher=self.plan.launcher, processes=self.plan.processes,
                             nnodes=self.plan.nnodes, log=str(self.run_dir / LOG_FILE))))
        self._start_process()

    def work(self) -> str:
        while self.process.poll() is None:
            self._pump()
            if self.stop_requested:
                self._ask_to_stop()
            time.sleep(POLL)
        code = self.process.wait()
        self._pump()
        for name in (STOP_FILE, PID_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        if isinstance(self._child_end, Finished):
            return self._child_end.status
        if isinstance(self._child_end, Failed):  # already in the log, with the child's own words
            raise JobError(self._child_end.text, self.run_dir.name)
        if self._forced:
            raise JobError(msg("launch.killed", seconds=self.stop_timeout), self.run_dir.name,
                           msg("launch.killed_fix"))
        raise JobError(msg("launch.exited", code=code, tail=log_tail(self.run_dir / LOG_FILE)),
                       str(self.run_dir / LOG_FILE), msg("launch.exited_fix"))

    def emit(self, event) -> None:
        if isinstance(event, (Finished, Failed)) and self._child_end is not None:
            return  # the child said how the run ended; its event is the run's end
        self._record(event)

    def finished_event(self, status: str) -> Finished:
        return Finished(status=status, output=str(self.run_dir / "adapter"), step=self.current_step())

    def current_step(self) -> int:
        last = self.events.last(Progress)
        return last.step if last is not None else 0

    def describe(self) -> str:
        return self.run_dir.name if self.run_dir is not None else self.thread_name

    # --- the child -------------------------------------------------------------------------------
    def _start_process(self) -> None:
        environ = {**os.environ, **self.workspace.environ(), "PYTHONUNBUFFERED": "1"}
        with (self.run_dir / LOG_FILE).open("ab") as log:
            log.write(f"$ {shlex.join(self.command)}\n".encode("utf-8"))
            log.flush()
            # a session of its own: the studio's Ctrl-C does not reach it, and it is ended as one group
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, env=environ, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        write_text_atomic(self.run_dir / PID_FILE, json.dumps({"pid": self.process.pid,
                                                               "started": process_started(self.process.pid)}))

    def _pump(self) -> None:
        """Hand the child's new events to this job's log."""
        for event in self._tail.read():
            self.events.emit(event)
            if isinstance(event, (Finished, Failed)):
                self._child_end = event

    def _ask_to_stop(self) -> None:
        now = time.monotonic()
        if self._stop_asked is None:
            write_text_atomic(self.run_dir / STOP_FILE, "")
            self._stop_asked = now
            self.events.emit(Log(msg("launch.stop_asked", seconds=self.stop_timeout)))
        elif not self._forced and now - self._stop_asked > self.stop_timeout:
            self._forced = True
            self.events.emit(Log(msg("launch.stop_forced", seconds=self.stop_timeout), level="warning"))
            terminate_tree(self.process.pid, KILL_GRACE)

    def _show_resumed_step(self, history: list[Event]) -> None:
        """A resumed run shows the step it continues from at once (as TrainingJob does), without an ETA."""
        checkpoint = latest_checkpoint(self.run_dir) if self.resuming else None
        if checkpoint is None:
            return
        step = checkpoint_number(checkpoint)
        kept = [e for e in history if isinstance(e, Progress) and e.step <= step]
        if kept:
            self.events.emit(dataclasses.replace(kept[-1], eta=None))

    def _record(self, event) -> None:
        """An event of this process: in the log, and in events.jsonl (only while the child writes nothing)."""
        self.events.emit(event)
        line = json.dumps(event.to_json(), ensure_ascii=False)
        try:
            with (self.run_dir / "events.jsonl").open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError:  # a full disk: the studio still shows it
            return
        self._tail.seen.add(line.encode("utf-8"))


class EventTail:
    """The new whole lines of an events.jsonl since the last read, as events.

    A file replaced by a rewrite (a resume drops the steps after its checkpoint) is read again from its
    start, and lines already seen are skipped: no event is handed over twice.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset, self.inode = 0, None
        self.seen: set[bytes] = set()

    def read(self) -> list[Event]:
        try:
            handle = self.path.open("rb")
        except OSError:
            return []
        with handle:
            info = os.fstat(handle.fileno())
            if info.st_ino != self.inode or info.st_size < self.offset:
                self.inode, self.offset = info.st_ino, 0
            handle.seek(self.offset)
            data = handle.read()
        whole = data[:data.rfind(b"\n") + 1]  # a line still being written waits for its end
        self.offset += len(whole)
        events = []
        for line in whole.splitlines():
            if not line.strip() or line in self.seen:
                continue
            self.seen.add(line)
            try:
                events.append(event_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return events


def stop_file_callback(run_dir: Path, on_stop: Callable[[], None]):
    """A TrainerCallback that ends the run at the end of a step once `run_dir/STOP` exists (checkpoint
    and adapter saved as for any stop). One stat a step; under several ranks one all_reduce makes them
    all stop at the same step, or the ones that went on would wait for the others forever."""
    from transformers import TrainerCallback

    path = Path(run_dir) / STOP_FILE

    class StopFileCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen = path.exists()
            if args.world_size > 1:
                import torch
                import torch.distributed as dist

                flag = torch.tensor([int(seen)], device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                seen = bool(flag.item())
            if seen:
                on_stop()
                control.should_save = True
                control.should_training_stop = True

    return StopFileCallback()


def process_started(pid: int) -> float | None:
    """When process `pid` started (psutil's create_time), None if it is gone: a pid with its start time
    names one process, even after the number is reused."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def still_running(run_dir: Path) -> bool:
    """Whether the launcher process named in the run's launcher.pid is still alive (a restarted studio's view)."""
    try:
        held = json.loads((Path(run_dir) / PID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the usual case: no launcher.pid
    import psutil

    try:
        process = psutil.Process(int(held["pid"]))
        return process.create_time() == held["started"] and process.status() != psutil.STATUS_ZOMBIE
    except (ValueError, KeyError, TypeError, psutil.Error):
        return False


def terminate_tree(pid: int, grace: float) -> None:
    """End process `pid` and every process below it: SIGTERM, then SIGKILL after `grace` seconds.

    The tree is listed first: torchrun starts each worker in a session of its own, so killing the
    launcher's group alone would leave the workers training.
    """
    import psutil

    try:
        leader = psutil.Process(pid)
        tree = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    _gone, alive = psutil.wait_procs(tree, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a launcher.log ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

