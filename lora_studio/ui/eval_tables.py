"""What the Evaluate tab shows, as data: the probe grid, the metrics, samples and control tables, the status line.

Pure functions of a run folder's result files (probes.jsonl, metrics.json, best.json) and the
studio's evaluation job; no widgets here, so tests call them directly. Table headers are worded in
the reader's language (Gradio does not translate a table's headers).
"""

from __future__ import annotations

import html
from pathlib import Path

from .. import probes
from ..config import load_yaml
from ..errors import StudioError
from ..evaluation import METRIC_KEYS, metric_text
from ..events import EvalProgress, Failed, Finished
from .i18n import say

PENDING = "…"  # a cell whose answer the running evaluation has not given yet


def eval_job_for(studio, run_dir: Path | None):
    """The studio's evaluation job when it is (or was last) about this run, else None."""
    job = studio.evaluations.job
    if job is None or run_dir is None or Path(job.run_dir).resolve() != Path(run_dir).resolve():
        return None
    return job


def grid_frame(run_dir: Path, prompts: list[str], job, lang: str):
    """The probe grid: a row per model (base first), a column per prompt; "…" where an answer is due."""
    import pandas as pd

    names, cells = probes.grid(probes.read_answers(run_dir), prompts)
    if job is not None and job.is_active:
        names = sorted(set(names) | {t.name for t in getattr(job, "targets", [])}, key=probes.order_key)
    rows = [[name, *(cells[(name, p)].answer if (name, p) in cells else PENDING for p in prompts)] for name in names]
    return pd.DataFrame(rows, columns=[say("evaluation.col_model", lang), *prompts])


def metrics_frame(values: dict, lang: str):
    import pandas as pd

    checkpoints = values.get("checkpoints", {})
    rows = [[name, *(metric_text(key, entry.get(key)) for key in METRIC_KEYS)] for name, entry in checkpoints.items()]
    return pd.DataFrame(rows, columns=[say("evaluation.col_model", lang),
                                       *(say(f"evaluation.metric_{key}", lang) for key in METRIC_KEYS)])


def samples_frame(values: dict, lang: str):
    import pandas as pd

    rows = [[name, say(f"evaluation.sample_{kind}", lang), metric_text("rouge_l", s["rouge_l"]), s["prompt"],
             s["answer"], s["reference"]]
            for name, entry in values.get("checkpoints", {}).items() for kind in ("best", "worst")
            for s in entry.get(kind, [])]
    columns = ("col_model", "col_kind", "metric_rouge_l", "col_prompt", "col_answer", "col_reference")
    return pd.DataFrame(rows, columns=[say(f"evaluation.{c}", lang) for c in columns])


def control_frame(values: dict, lang: str):
    """A row per control question: the base's answer, then each checkpoint's."""
    import pandas as pd

    checkpoints = values.get("checkpoints", {})
    prompts = list(dict.fromkeys(c["prompt"] for entry in checkpoints.values() for c in entry.get("control", [])))
    answers = {name: {c["prompt"]: c["answer"] for c in entry.get("control", [])} for name, entry in checkpoints.items()}
    rows = [[p, *(answers[name].get(p, "") for name in checkpoints)] for p in prompts]
    return pd.DataFrame(rows, columns=[say("evaluation.col_prompt", lang), *checkpoints])


def status_html(run_dir: Path | None, job, lang: str) -> str:
    if run_dir is None:
        return say("evaluation.no_run", lang)
    best = probes.best_name(run_dir)
    facts = [f"<b>{html.escape(run_dir.name)}</b>",
             say("evaluation.best_is", lang, name=html.escape(best)) if best else say("evaluation.best_none", lang)]
    if job is not None:
        progress = job.events.last(EvalProgress)
        end = job.events.last(Failed) or job.events.last(Finished)
        facts.append(say("evaluation.state", lang, state=say(f"status.{job.state}", lang)))
        if progress is not None:
            facts.append(say("evaluation.progress", lang, done=progress.done, total=progress.total,
                             name=html.escape(progress.checkpoint)))
        if isinstance(end, Failed):
            facts.append(f"<span class='studio-error'>{html.escape(end.text.render(lang))}</span>")
    return " · ".join(facts)


def shown_prompts(run_dir: Path, job) -> list[str]:
    """The grid's columns: the running job's prompts, else the run's probe set (its config's if probes.txt
    cannot be read: a poll never fails)."""
    if job is not None and getattr(job, "prompts", None):
        return list(job.prompts)
    try:
        return probes.probe_set(run_dir)
    except StudioError:
        config = load_yaml(run_dir / "config.yaml")
        return list(config.probe_prompts)
