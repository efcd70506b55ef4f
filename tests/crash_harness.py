"""Kill `studio.py train` with SIGKILL at random moments, many times, and resume it each time.

    python tests/crash_harness.py CONFIG.yaml RUN_NAME ROUNDS SEED REPORT.json

Run in a subprocess by tests/test_crash_safety.py. The heavy imports happen once here; each round
forks a child that runs exactly what `python studio.py train ...` runs (`lora_studio.cli.main`), so a
round costs a model load, not a Python start. The child writes one byte to a pipe as each file of a
checkpoint (or the final adapter) starts to be written, and lingers a few milliseconds around it, so
that a kill can be aimed into a save. After each kill the run folder is checked: every
`checkpoint-N` is whole, and the newest whole one never goes back.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402,F401 - imported before forking, so a round does not pay for it
import peft.peft_model  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402,F401

from lora_studio import checkpoints, cli, recipe, training  # noqa: E402,F401
from lora_studio.workspace import Workspace  # noqa: E402

SAVE_BYTE = b"s"


def aim_kills_at_saves(pipe_fd: int, rng: random.Random) -> None:
    """In the child: each write of a checkpoint file says so on the pipe and takes a few ms longer."""
    def slowed(write):
        def wrapper(*args, **kwargs):
            os.write(pipe_fd, SAVE_BYTE)
            time.sleep(rng.uniform(0, 0.008))
            result = write(*args, **kwargs)
            time.sleep(rng.uniform(0, 0.004))
            return result
        return wrapper

    torch.save = slowed(torch.save)
    peft.peft_model.safe_save_file = slowed(peft.peft_model.safe_save_file)
    for name in ("publish", "rotate", "save_adapter"):
        setattr(checkpoints, name, slowed(getattr(checkpoints, name)))
    training.save_adapter = checkpoints.save_adapter


def one_round(args: list[str], log: Path, rng: random.Random, mode: str | None = None) -> dict:
    """Fork a child running `studio.py ARGS`, kill it as `mode` says (random: at a random time, or at a
    random file of a save; 'none': let it end), return what happened."""
    read_fd, write_fd = os.pipe()
    seed = rng.randrange(1 << 30)
    pid = os.fork()
    if pid == 0:  # the child: `python studio.py ARGS`, its output to a log
        os.close(read_fd)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
        aim_kills_at_saves(write_fd, random.Random(seed))
        code = 1
        try:
            code = cli.main(args)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    mode = mode or rng.choice(["time", "save"])
    saves_before_kill = rng.randint(1, 12)
    deadline = time.monotonic() + (rng.uniform(0.2, 2.5) if mode == "time" else 60)
    saves, exited = 0, None
    while exited is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.05))
        if ready:
            chunk = os.read(read_fd, 4096)
            saves += len(chunk)
            if mode == "save" and saves >= saves_before_kill:
                time.sleep(rng.uniform(0, 0.006))  # somewhere inside or just after that file's write
                break
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exited = os.waitstatus_to_exitcode(status)
    if exited is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(read_fd)
    return {"args": args, "mode": mode, "saves_seen": saves, "exit": exited, "killed": exited is None}


def check_folder(run_dir: Path) -> dict:
    """What a user would find in the run folder after the crash."""
    folder = run_dir / "checkpoints"
    named = sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []
    whole = [p.name for p in checkpoints.complete_checkpoints(folder)]
    return {"checkpoints": named, "whole": whole, "newest": checkpoints.checkpoint_number(Path(whole[-1])) if whole
            else None, "staging": sorted(p.name for p in (folder / checkpoints.STAGING).glob("*"))}


def main() -> int:
    config, run_name, rounds, seed, report = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = random.Random(seed)
    run_dir = Workspace.from_env().runs / run_name
    log = Path(report).with_suffix(".log")
    results = []
    # at least `rounds` kills, and the last leaves something to resume (the test resumes it to the end)
    while sum(r["killed"] for r in results) < rounds or results[-1]["folder"]["newest"] is None:
        resume = (run_dir / "config.yaml").is_file()
        args = ["train", "--resume", run_name] if resume else ["train", config, "--set", f"run_name={run_name}"]
        result = one_round(args, log, rng)
        result["folder"] = check_folder(run_dir)
        results.append(result)
        if result["exit"] is not None:
            break  # it ended by itself: the test says whether that was right
        if result["folder"]["newest"] is None:  # killed before its first checkpoint: nothing to resume
            refused = one_round(["train", "--resume", run_name], log, rng, mode="none")
            results.append({**refused, "folder": check_folder(run_dir), "before_first_checkpoint": True})
            shutil.rmtree(run_dir)  # what a user does then: start it again
    Path(report).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
