"""A run's probe set, the probe answers of its checkpoints (probes.jsonl), and its best checkpoint.

Files in the run folder, each written whole or not at all (files.write_text_atomic):

- `probes.txt`: the probe set edited in the studio, one prompt a line. It is preferred over the
  run's `config.yaml` `probe_prompts`, which stays exactly as the run was trained.
- `probes.jsonl`: one line per (checkpoint or "base", prompt): checkpoint, step, prompt, answer,
  tokens, seconds. An evaluation rewrites it (atomically) after every answer, so the grid fills as it
  runs and a crash leaves every finished line; the lines of checkpoints it does not evaluate stay.
- `best.json`: the checkpoint the user marked best; `best_adapter(run)` is its folder, which chat
  and export use by default.

Checkpoint names are the folders': `checkpoint-N`, `adapter` (the final adapter) and `base` (the
base model, no adapter). Rows sort base first, then by step, the final adapter last. `targets(run,
spec)` says which of them an evaluation asks.
"""

from __future__ import annotations

import filecmp
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoints import checkpoint_number, complete_checkpoints
from .errors import DataError, ModelError
from .files import write_text_atomic
from .i18n import msg

PROBE_SET_FILE = "probes.txt"
ANSWERS_FILE = "probes.jsonl"
BEST_FILE = "best.json"
BASE = "base"
FINAL = "adapter"
MAX_PROBES = 100  # a grid wider than this is not read; a file with more is probably not a probe set
PROBE_SUFFIXES = (".txt", ".json", ".jsonl")


@dataclass(frozen=True)
class ProbeAnswer:
    checkpoint: str   # base | checkpoint-N | adapter
    step: int
    prompt: str
    answer: str
    tokens: int
    seconds: float


# --- the probe set -------------------------------------------------------------------------------
def load_probe_file(path: Path | str) -> list[str]:
    """Prompts from a file: .txt one a line; .json a list of strings or of {"prompt": ...}; .jsonl
    one string or {"prompt": ...} a line. Blank lines and blank prompts are skipped."""
    path = Path(path).expanduser()
    shown = str(path)
    if path.suffix.lower() not in PROBE_SUFFIXES:
        raise DataError(msg("evaluation.probe_file_type"), shown,
                        msg("evaluation.probe_file_type_fix", suffixes=", ".join(PROBE_SUFFIXES)))
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        raise DataError(msg("evaluation.probe_file_unreadable"), shown, msg("evaluation.probe_file_unreadable_fix")) \
            from None
    if path.suffix.lower() == ".txt":
        prompts = content.splitlines()
    elif path.suffix.lower() == ".json":
        try:
            values = json.loads(content)
        except ValueError as exc:
            raise DataError(msg("evaluation.probe_file_not_json", line=getattr(exc, "lineno", 0)), shown,
                            _format_fix()) from None
        if not isinstance(values, list):
            raise DataError(msg("evaluation.probe_file_not_list"), shown, _format_fix())
        prompts = [_prompt_of(value, shown, index + 1) for index, value in enumerate(values)]
    else:
        prompts = []
        for number, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    value = json.loads(line)
                except ValueError:
                    raise DataError(msg("evaluation.probe_file_not_json", line=number), shown,
                                    _format_fix()) from None
                prompts.append(_prompt_of(value, shown, number))
    return checked_probes(prompts, shown)


def _prompt_of(value, shown: str, number: int) -> str:
    if isinstance(value, dict):
        value = value.get("prompt")
    if not isinstance(value, str):
        raise DataError(msg("evaluation.probe_not_text", number=number), shown, _format_fix())
    return value


def checked_probes(prompts, where: str = PROBE_SET_FILE) -> list[str]:
    """The prompts stripped, blank and repeated ones dropped; a DataError when none is left or too many are."""
    clean = list(dict.fromkeys(p.strip() for p in prompts if isinstance(p, str) and p.strip()))
    if not clean:
        raise DataError(msg("evaluation.no_probes"), where, msg("evaluation.no_probes_fix"))
    if len(clean) > MAX_PROBES:
        raise DataError(msg("evaluation.too_many_probes", count=len(clean), most=MAX_PROBES), where,
                        msg("evaluation.too_many_probes_fix"))
    return clean


def probe_set(run_dir: Path, config=None) -> list[str]:
    """The run's probe set: probes.txt when the user saved one, else the run's config.probe_prompts."""
    edited = Path(run_dir) / PROBE_SET_FILE
    if edited.is_file():
        return load_probe_file(edited)
    if config is None:
        from .config import load_yaml

        config = load_yaml(Path(run_dir) / "config.yaml")
    return list(config.probe_prompts)


def save_probe_set(run_dir: Path, prompts) -> Path:
    """Write the probe set the studio edited into run/probes.txt (config.yaml is never changed)."""
    clean = checked_probes(prompts, str(Path(run_dir) / PROBE_SET_FILE))
    return write_text_atomic(Path(run_dir) / PROBE_SET_FILE, "".join(p + "\n" for p in clean))


# --- probe answers ------------------------------------------------------------------------------
def read_answers(run_dir: Path) -> list[ProbeAnswer]:
    """Every readable line of run/probes.jsonl (none when it is missing)."""
    path = Path(run_dir) / ANSWERS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    answers = []
    for line in lines:
        try:
            answers.append(ProbeAnswer(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return answers


class AnswerLog:
    """probes.jsonl as an evaluation writes it: the other checkpoints' lines kept, new ones added."""

    def __init__(self, run_dir: Path, replacing=()):
        self.path = Path(run_dir) / ANSWERS_FILE
        replacing = set(replacing)
        self.rows = [a for a in read_answers(run_dir) if a.checkpoint not in replacing]

    def add(self, answer: ProbeAnswer) -> None:
        """Record one answer (replacing the same checkpoint's answer to the same prompt) and rewrite the file."""
        self.rows = [a for a in self.rows if (a.checkpoint, a.prompt) != (answer.checkpoint, answer.prompt)]
        self.rows.append(answer)
        self.rows.sort(key=lambda a: order_key(a.checkpoint))  # stable: prompts keep their order
        write_text_atomic(self.path, "".join(json.dumps(asdict(a), ensure_ascii=False) + "\n" for a in self.rows))


def order_key(name: str) -> tuple[int, int, str]:
    """Sorts base first, then checkpoints by step, the final adapter last."""
    if name == BASE:
        return (0, 0, name)
    step = checkpoint_number(Path(name))
    return (1, step, name) if step is not None else (2, 0, name)


def grid(answers: list[ProbeAnswer], prompts: list[str]) -> tuple[list[str], dict[tuple[str, str], ProbeAnswer]]:
    """(checkpoint names in row order, {(checkpoint, prompt): answer}) for the prompts asked."""
    asked = set(prompts)
    cells = {(a.checkpoint, a.prompt): a for a in answers if a.prompt in asked}
    names = sorted({name for name, _ in cells}, key=order_key)
    return names, cells


# --- the best checkpoint ------------------------------------------------------------------------
def adapter_name(run_dir: Path, folder: Path) -> str:
    """A loadable folder of the run as a checkpoint name: 'adapter' or 'checkpoint-N'."""
    folder = Path(folder)
    return FINAL if folder.resolve() == (Path(run_dir) / FINAL).resolve() else folder.name


def adapter_by_name(run_dir: Path, name: str) -> Path | None:
    """The run's whole adapter or checkpoint folder called `name`; None when there is none."""
    from .runs import adapter_dirs

    for folder in adapter_dirs(run_dir):
        if adapter_name(run_dir, folder) == name:
            return folder
    return None


def best_name(run_dir: Path) -> str | None:
    """The checkpoint name in run/best.json, whether or not its folder is still there."""
    try:
        values = json.loads((Path(run_dir) / BEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = values.get("checkpoint") if isinstance(values, dict) else None
    return name if isinstance(name, str) and name else None


def best_adapter(run_dir: Path) -> Path | None:
    """The folder of the checkpoint the user marked best, if marked and still whole; else None."""
    name = best_name(run_dir)
    return adapter_by_name(run_dir, name) if name else None


def mark_best(run_dir: Path, checkpoint: str | Path | None) -> Path | None:
    """Mark a checkpoint (its name or folder) as the run's best, in run/best.json; None clears the mark.

    Returns the marked folder. A name that is not one of the run's whole adapters is a ModelError
    naming the ones there are.
    """
    from .runs import adapter_dirs

    run_dir = Path(run_dir)
    if checkpoint is None or str(checkpoint).strip() == "":
        (run_dir / BEST_FILE).unlink(missing_ok=True)
        return None
    name = adapter_name(run_dir, Path(checkpoint)) if isinstance(checkpoint, Path) else str(checkpoint).strip()
    folder = adapter_by_name(run_dir, name)
    if folder is None:
        there = ", ".join(adapter_name(run_dir, f) for f in adapter_dirs(run_dir)) or "-"
        raise ModelError(msg("evaluation.no_such_checkpoint", name=name), str(run_dir),
                         msg("evaluation.no_such_checkpoint_fix", names=there))
    step = checkpoint_number(folder)
    write_text_atomic(run_dir / BEST_FILE, json.dumps(
        {"checkpoint": name, "step": step, "marked_at": round(time.time(), 3)}, ensure_ascii=False) + "\n")
    return folder


# --- which models an evaluation asks ------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str            # base | checkpoint-N | adapter
    step: int
    folder: Path | None  # None: the base model


def targets(run_dir: Path, spec: str = "all") -> list[Target]:
    """The models an evaluation asks, in row order: always the base, then the checkpoints `spec` names.

    "all": every whole checkpoint by step, plus the final adapter/ only when its weights differ from
    every checkpoint's (usually it is the last checkpoint; after early stopping it may be another);
    "best": the one marked best; "N,M": checkpoint-N and checkpoint-M (names such as "adapter" too).
    """
    run_dir = Path(run_dir)
    found = [_target(run_dir, c) for c in complete_checkpoints(run_dir / "checkpoints")]
    final = adapter_by_name(run_dir, FINAL)
    if final is not None and not any(_same_weights(final, t.folder) for t in found):
        found.append(_target(run_dir, final))
    spec = (spec or "all").strip()
    if spec == "all":
        return [Target(BASE, 0, None), *found]
    if spec == "best":
        folder = best_adapter(run_dir)
        if folder is None:
            raise ModelError(msg("evaluation.no_best"), str(run_dir), msg("evaluation.no_best_fix"))
        return [Target(BASE, 0, None), _target(run_dir, folder)]
    chosen = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        name = f"checkpoint-{item}" if item.isdigit() else item
        folder = adapter_by_name(run_dir, name)
        if folder is None:
            raise ModelError(msg("evaluation.no_such_checkpoint", name=name), str(run_dir),
                             msg("evaluation.no_such_checkpoint_fix",
                                 names=", ".join([t.name for t in found] + ([FINAL] if final else [])) or "-"))
        chosen.append(_target(run_dir, folder))
    return [Target(BASE, 0, None), *chosen]


def _target(run_dir: Path, folder: Path) -> Target:
    name = adapter_name(run_dir, folder)
    step = checkpoint_number(folder)
    if step is None:  # the final adapter: the run's last step
        from .runs import read_run

        step = read_run(run_dir).step
    return Target(name, step, folder)


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two adapter folders hold byte-identical weights (the final adapter is usually the last checkpoint)."""
    fa, fb = Path(a) / "adapter_model.safetensors", Path(b) / "adapter_model.safetensors"
    return fa.is_file() and fb.is_file() and filecmp.cmp(fa, fb, shallow=False)


def _format_fix():
    return msg("evaluation.probe_file_format_fix", record='{"prompt": "..."}')
