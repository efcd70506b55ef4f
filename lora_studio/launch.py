"""More processes than one: whether a run needs torchrun or `accelerate launch`, and the command for it.

    plan = launch.plan(config, launch.visible_devices())   # None: the run trains in this process
    plan.command(train_args(run_dir))                       # node 0's argv: every rank trains into run_dir
    LaunchedTrainingJob(config, workspace, plan).start()    # launch_job.py; the studio: ui/train_launch.py

`plan` is where every launcher setting is checked, before anything starts: an accelerate config that
does not parse, more processes than visible GPUs, a multi-node run without its rendezvous endpoint,
a launcher that is not installed. The launched job itself (a child process group whose events.jsonl
the studio follows) is `launch_job.LaunchedTrainingJob`. A multi-node run is prepared here
(`prepare_nodes`: its folder and each node's command) and started on each node by its user.

The commands run `studio.py train ...` with this Python (`python -m torch.distributed.run` is
torchrun, `python -m accelerate.commands.launch` is `accelerate launch`), so the venv's own are used.
On a machine without CUDA, an explicitly chosen launcher starts CPU processes that talk over gloo
(recipe.training_arguments picks the backend): that is how the tests run two ranks.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Sequence

from .config import RunConfig, Setting
from .errors import ConfigError, first_line
from .i18n import language_from_env, msg, text

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where studio.py is
SCRIPT = PROJECT_ROOT / "studio.py"
SCRIPT_FILE = "launch.sh"  # in a launched run's folder: the launcher's command for every node
LAUNCHERS = ("torchrun", "accelerate")
# launcher -> (the module `python -m` runs, the package that brings it)
MODULES = MappingProxyType({"torchrun": ("torch.distributed.run", "torch"),
                            "accelerate": ("accelerate.commands.launch", "accelerate")})
ENDPOINT = re.compile(r"^\[?[A-Za-z0-9_.:\-]+\]?:\d{1,5}$")


@dataclass(frozen=True)
class LaunchPlan:
    launcher: str               # torchrun | accelerate
    processes: int              # per node
    nnodes: int = 1
    rdzv_endpoint: str = ""     # host:port of node 0 (multi-node only)
    accelerate_config: str = ""  # an absolute path, or "" for plain DDP
    config_processes: bool = False  # the accelerate config file names the process count itself

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    def command(self, train_args: Sequence[str], node_rank: int = 0) -> list[str]:
        """The argv that starts this plan's processes on node `node_rank`, each running `studio.py *train_args`."""
        if self.launcher == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.processes)]
            if self.multi_node:
                argv += ["--nnodes", str(self.nnodes), "--node_rank", str(node_rank), "--rdzv_backend", "c10d",
                         "--rdzv_endpoint", self.rdzv_endpoint]
            else:
                argv += ["--standalone"]
        else:
            argv = [sys.executable, "-m", "accelerate.commands.launch"]
            if self.accelerate_config:
                argv += ["--config_file", self.accelerate_config]
            else:  # plain DDP; the defaults said out loud, so accelerate warns about none of them
                argv += ["--multi_gpu"] if self.processes * self.nnodes > 1 else []
                argv += ["--mixed_precision", "no", "--dynamo_backend", "no"]
                argv += [] if self.multi_node else ["--num_machines", "1"]
            if not self.config_processes:
                argv += ["--num_processes", str(self.processes * self.nnodes)]  # accelerate counts every node's
            if self.multi_node:
                host, _, port = self.rdzv_endpoint.rpartition(":")
                argv += ["--num_machines", str(self.nnodes), "--machine_rank", str(node_rank),
                         "--main_process_ip", host.strip("[]"), "--main_process_port", port]
        return [*argv, str(SCRIPT), *train_args]

    def shell_lines(self, train_args: Sequence[str], environ: dict) -> list[str]:
        """One shell line per node (node 0 first): what to run on each machine, workspace included."""
        prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in environ.items())
        return [f"{prefix} {shlex.join(self.command(train_args, rank))}".strip() for rank in range(self.nnodes)]


def visible_devices() -> int:
    """CUDA devices this process sees (0 without CUDA); torch answers without starting CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(config: RunConfig, world_devices: int) -> LaunchPlan | None:
    """How `config` is started on a machine with `world_devices` visible GPUs: None in this process.

    'auto' launches when more than one GPU is visible or more than one node takes part: torchrun,
    or accelerate when an accelerate config is given. A ConfigError says what in the settings cannot be.
    """
    launcher = config.launcher
    if launcher == "none":
        return None
    if launcher == "auto":
        if world_devices <= 1 and config.nnodes <= 1:
            return None
        launcher = "accelerate" if config.accelerate_config.strip() else "torchrun"
    require_installed(launcher)
    accelerate_file, from_file = "", 0
    if launcher == "accelerate" and config.accelerate_config.strip():
        accelerate_file, values = read_accelerate_config(config.accelerate_config)
        # the file's own process count (accelerate's key has the setting's name), for every node together
        counted = values.get(Setting.num_processes)
        from_file = counted if isinstance(counted, int) and counted > 0 and not config.num_processes else 0
    processes = max(from_file // config.nnodes, 1) if from_file else config.num_processes or max(world_devices, 1)
    if world_devices and processes > world_devices:
        raise ConfigError(msg("launch.too_many_processes", asked=processes, visible=world_devices),
                          Setting.num_processes, msg("launch.too_many_processes_fix", visible=world_devices))
    endpoint = check_endpoint(config)
    return LaunchPlan(launcher, processes, config.nnodes, endpoint, accelerate_file, bool(from_file))


def require_installed(launcher: str) -> None:
    module, package = MODULES[launcher]
    if not installed(module):
        raise ConfigError(msg("launch.not_installed", launcher=launcher, package=package), Setting.launcher,
                          msg("launch.not_installed_fix", package=package))


def installed(module: str) -> bool:
    """Whether `module` can be imported here (its package found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def check_endpoint(config: RunConfig) -> str:
    """The rendezvous endpoint of a multi-node run ('' for one node), once it reads as host:port."""
    endpoint = config.rdzv_endpoint.strip()
    if config.nnodes <= 1:
        return endpoint
    if not endpoint:
        raise ConfigError(msg("launch.needs_endpoint", nnodes=config.nnodes), Setting.rdzv_endpoint,
                          msg("launch.needs_endpoint_fix"))
    if not ENDPOINT.match(endpoint) or not 0 < int(endpoint.rpartition(":")[2]) < 65536:
        raise ConfigError(msg("launch.bad_endpoint", endpoint=endpoint), Setting.rdzv_endpoint,
                          msg("launch.needs_endpoint_fix"))
    return endpoint


def read_accelerate_config(name: str) -> tuple[str, dict]:
    """(absolute path, its settings) of an accelerate config file, once it is a YAML (or JSON) mapping
    whose distributed_type, if given, is one accelerate knows."""
    import yaml

    path = Path(name.strip()).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(msg("launch.accelerate_config_missing"), str(path), msg("launch.accelerate_config_fix"))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(msg("launch.accelerate_config_not_yaml", detail=first_line(exc)), str(path),
                          msg("launch.accelerate_config_fix")) from None
    if not isinstance(values, dict):
        raise ConfigError(msg("launch.accelerate_config_not_mapping"), str(path), msg("launch.accelerate_config_fix"))
    kind = values.get("distributed_type")
    known = distributed_types()
    if kind is not None and str(kind) not in known:
        raise ConfigError(msg("launch.accelerate_config_unknown_type", value=str(kind)), f"{path}: distributed_type",
                          msg("launch.accelerate_config_unknown_type_fix", known=", ".join(known)))
    return str(path), values


def distributed_types() -> tuple[str, ...]:
    """The distributed_type values accelerate's config files may hold."""
    from accelerate.utils import DistributedType

    return tuple(kind.value for kind in DistributedType)


def train_args(run_dir: Path, resume: bool = False, trust_remote_code: bool = False,
               overrides: dict | None = None) -> list[str]:
    """The `studio.py` arguments of every rank: train into the prepared `run_dir`, or resume it."""
    import json

    run_dir = Path(run_dir)
    argv = ["train", "--resume", str(run_dir)] if resume else \
        ["train", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
    for key, value in (overrides or {}).items():
        argv += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]  # JSON reads as YAML
    return argv + (["--trust-remote-code"] if trust_remote_code else [])


def dry_run_lines(config: RunConfig, workspace, lang: str) -> list[str]:
    """What `train --dry-run` adds under a launcher: the command of each node (none in-process)."""
    from .runs import default_run_name, sanitize_run_name

    found = plan(config, visible_devices())
    if found is None:
        return []
    run_dir = workspace.runs / sanitize_run_name(config.run_name or default_run_name(config))
    lines = [text("launch.dry_run_command", lang, launcher=found.launcher, processes=found.processes)]
    for rank, line in enumerate(found.shell_lines(train_args(run_dir), workspace.environ())):
        lines += [text("launch.dry_run_node", lang, rank=rank), f"  {line}"] if found.multi_node else [f"  {line}"]
    return lines


def launch_script(plan: LaunchPlan, arguments: list[str], workspace) -> str:
    """launch.sh: the launcher's command again; on a multi-node run NODE_RANK picks the node's line."""
    lines = ["#!/bin/sh", f"# {text('launch.script_comment', language_from_env())}",
             *(f"export {name}={shlex.quote(value)}" for name, value in workspace.environ().items()),
             f"cd {shlex.quote(str(PROJECT_ROOT))} || exit 1"]
    if not plan.multi_node:
        return "\n".join([*lines, f"exec {shlex.join(plan.command(arguments))} \"$@\""]) + "\n"
    lines.append('case "${NODE_RANK:-0}" in')
    lines += [f"  {rank}) exec {shlex.join(plan.command(arguments, rank))} ;;" for rank in range(plan.nnodes)]
    return "\n".join([*lines, "esac", "exit 2"]) + "\n"


def prepare_nodes(config: RunConfig, workspace, plan: LaunchPlan,
                  trust_remote_code: bool = False) -> tuple[Path, list[str]]:
    """A multi-node run's folder made ready (config.yaml, launch.sh), nothing started: (folder, each node's
    command). Every node trains into that folder, so each must see it at the same path."""
    import os

    from .config import save_yaml
    from .files import write_text_atomic
    from .runs import create_run_dir, resolved_config
    from .workspace import ensure_writable

    ensure_writable(workspace, workspace.runs)
    run_dir = create_run_dir(config, workspace)
    save_yaml(resolved_config(config, run_dir.name), run_dir / "config.yaml")
    arguments = train_args(run_dir, trust_remote_code=trust_remote_code)
    os.chmod(write_text_atomic(run_dir / SCRIPT_FILE, launch_script(plan, arguments, workspace)), 0o755)
    return run_dir, plan.shell_lines(arguments, workspace.environ())


def prepared_run(workspace) -> Path | None:
    """The newest run folder `prepare_nodes` made that no process has started yet (no events.jsonl)."""
    root = workspace.runs
    found = [p for p in root.iterdir() if (p / SCRIPT_FILE).is_file() and (p / "config.yaml").is_file()
             and not (p / "events.jsonl").exists()] if root.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime, default=None)
