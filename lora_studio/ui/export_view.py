"""What the Export tab shows, as data: the job's status line and log, the proof table, the commands, the exports list.

Pure functions of an export job's events and of export folders on disk (export.json, verify.json); no
widgets here, so tests call them directly. Everything is worded in the reader's language: Gradio
does not translate table headers or HTML.
"""

from __future__ import annotations

import html
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from .. import export, probes
from ..disk import folder_bytes
from ..events import ExportProgress, Failed, Finished, Log
from ..hub_local import format_bytes
from ..i18n import Msg
from .i18n import clock, say

LOG_LINES = 14
# The proof table's columns: a verify.json source -> its header key. llama.cpp is shown for every GGUF
# export, answered or not, so a missing llama-cpp-python reads as "not checked", not as nothing.
SOURCES = (("studio", "export_ui.col_studio"), ("merged", "export_ui.col_merged"), ("gguf", "export_ui.col_gguf"),
           ("llama.cpp", "export_ui.col_llama_cpp"), ("space", "export_ui.col_space"))
DATA_CLASS = "export-data"  # prompts and answers: the model's words, not ours (the language checks skip them)
OK, BAD = "#067647", "#b42318"
REPO_PLACEHOLDER = "USER/SPACE"  # in the publish commands: the reader's own Space
FINISHED_KEY = "export.finished"  # a whole export's last line: the status line says it with the columns' names


# --- the job ---------------------------------------------------------------------------------------
def job_label(job, lang: str) -> str:
    request = getattr(job, "request", None)
    if request is None:  # the llama.cpp fetch
        return say("export_ui.fetch_job", lang)
    target = say(f"export_ui.target_{request.target}", lang)
    return say("export_ui.fact_job", lang, run=Path(request.run).name, target=target)


def progress_of(events: list) -> tuple:
    """(the job's last step event, its last progress event of any stage): its step, and where it is within it."""
    progress = [e for e in events if isinstance(e, ExportProgress)]
    steps = [e for e in progress if e.stage in export.STAGES]
    return (steps[-1] if steps else None), (progress[-1] if progress else None)


def status_html(job, lang: str) -> str:
    """The live (or last) export's line: a bar, its step and the stage within it, its state; its error."""
    if job is None:
        return f"<div id='export-status-text'>{say('export_ui.no_job', lang)}</div>"
    events = job.events.all()
    (step, last), count = progress_of(events), len(export.STAGES)
    facts = [f"<b>{html.escape(job_label(job, lang))}</b>",
             say("export_ui.fact_state", lang, state=f"<b class='run-state'>{say(f'status.{job.state}', lang)}</b>")]
    within = last.done / last.total if last is not None and last.total else 0.0
    if step is not None:
        number = min(export.STAGES.index(step.stage) + 1, count)
        facts.append(say("export_ui.fact_step", lang, step=number, total=count, stage=say(step.stage, lang)))
        done = step.done if last is step else step.done + min(within, 1.0)
        percent = 100 * min(done / count, 1.0)
    else:
        percent = 100 * within
    if last is not None and last is not step:
        facts.append(say("export_ui.fact_within", lang, stage=say(last.stage, lang), done=last.done, total=last.total))
    if events:
        facts.append(say("export_ui.fact_elapsed", lang, time=clock(events[-1].time - events[0].time)))
    end = next((e for e in reversed(events) if isinstance(e, (Finished, Failed))), None)
    if isinstance(end, Finished) and end.status == "completed":
        percent = 100
    message = ""
    if isinstance(end, Failed):
        message = f"<div class='studio-error'>{html.escape(end.text.render(lang))}</div>"
    elif isinstance(end, Finished) and getattr(job, "verify", None) is not None:
        where = say("export_ui.result_folder", lang, path=f"<code>{html.escape(end.output)}</code>")
        message = f"<div>{where} · {html.escape(verdict(job.verify, lang))}</div>"
    elif isinstance(end, Finished) and end.text is not None:
        message = f"<div>{html.escape(end.text.render(lang))}</div>"
    return (f"<div class='studio-progress'><progress max='100' value='{percent:.1f}'></progress> {percent:.0f}%</div>"
            f"<div id='export-status-text'>{' · '.join(facts)}</div>{message}")


def log_tail(events: list, lang: str) -> str:
    lines = []
    for event in events:
        if isinstance(event, Log):
            line = event.text.render(lang)
            lines.append(line if event.level == "info" else say("export_ui.log_warning", lang, text=line))
        elif isinstance(event, Failed):
            lines.append(say("export_ui.log_failed", lang, text=event.text.render(lang)))
        elif isinstance(event, Finished) and event.text is not None and event.text.key != FINISHED_KEY:
            lines.append(event.text.render(lang))
    return "\n".join(lines[-LOG_LINES:])


# --- an export's result ------------------------------------------------------------------------------
def read_json(file: Path) -> dict:
    try:
        values = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def result_html(folder: Path | None, table: dict | None, lang: str) -> str:
    """Where the export is, how big, which adapter, whether it answers like the studio (and the proof's notes)."""
    if folder is None or table is None:
        return f"<div>{say('export_ui.result_none', lang)}</div>"
    facts = [say("export_ui.result_folder", lang, path=f"<code>{html.escape(str(folder))}</code>"),
             say("export_ui.result_size", lang, size=format_bytes(folder_bytes(folder)))]
    if table.get("adapter") and table.get("run"):
        name = probes.adapter_name(Path(table["run"]), Path(table["adapter"]))
        facts.append(say("export_ui.result_adapter", lang, name=html.escape(adapter_label(name, lang))))
    notes = [Msg.from_json(n).render(lang) for n in table.get("notes", [])]
    same = table.get("verdict") == "same"
    lines = [" · ".join(facts), f"<b style='color:{OK if same else BAD}'>{html.escape(verdict(table, lang))}</b>",
             *(html.escape(note) for note in notes)]
    return "".join(f"<div>{line}</div>" for line in lines)


def verdict(table: dict, lang: str) -> str:
    """export_verify's verdict, with each source named as the table's columns name it."""
    count, names, comma = len(table["prompts"]), dict(SOURCES), "、" if lang == "zh" else ", "
    same = {source: n for source, n in table.get("same", {}).items() if source in names}
    if table.get("verdict") == "same":
        return say("export.verdict_same", lang, sources=comma.join(say(names[s], lang) for s in same), count=count)
    differing = comma.join(f"{say(names[s], lang)} {n}/{count}" for s, n in same.items() if n < count)
    return say("export.verdict_differs", lang, sources=differing, count=count)


def adapter_label(name: str, lang: str) -> str:
    """A checkpoint as the picker names it: 'checkpoint-N', or the final adapter in words."""
    return say("export_ui.final_adapter", lang) if name == probes.FINAL else name


def columns(table: dict) -> list[str]:
    """The sources shown: those answered, and llama.cpp beside any GGUF (answered or not)."""
    sources = list(table.get("sources", []))
    if "gguf" in sources and "llama.cpp" not in sources:
        sources.append("llama.cpp")
    return [source for source, _ in SOURCES if source in sources]


def parity_html(table: dict | None, lang: str) -> str:
    """The proof table: a row per probe prompt, the studio's answer, then ✓ or ✗ (and the first differing token)."""
    if not table or not table.get("prompts"):
        return ""
    shown = columns(table)
    header = "".join(f"<th>{html.escape(say(key, lang))}</th>" for source, key in SOURCES if source in shown)
    rows = []
    for row in table["prompts"]:
        cells = [f"<td class='{DATA_CLASS}'>{html.escape(row['prompt'])}</td>"]
        for source in shown:
            cells.append(_cell(row["answers"].get(source), source, lang))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    title = say("export_ui.parity_title", lang, count=len(table["prompts"]),
                tokens=table.get(_tokens_key(), "?"))
    style = ("<style>#export-parity table{border-collapse:collapse;width:100%;font-size:0.92em}"
             "#export-parity th,#export-parity td{border:1px solid var(--border-color-primary);padding:6px 8px;"
             "text-align:left;vertical-align:top}#export-parity th{background:var(--background-fill-secondary)}"
             "#export-parity .mark{font-weight:700}#export-parity .answer{color:var(--body-text-color-subdued);"
             "font-size:0.9em;margin-top:2px}</style>")
    return (f"{style}<div class='parity-title'><b>{html.escape(title)}</b></div>"
            f"<table><thead><tr><th>{html.escape(say('export_ui.col_prompt', lang))}</th>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _tokens_key() -> str:
    from ..export_verify import TOKENS_KEY

    return TOKENS_KEY


def _cell(cell: dict | None, source: str, lang: str) -> str:
    if cell is None:
        return f"<td>{html.escape(say('export_ui.cell_not_checked', lang))}</td>"
    answer = html.escape(cell.get("text") or "∅")
    if source == "studio":
        return f"<td class='{DATA_CLASS}'>{answer}</td>"
    if cell.get("prompt_same") is False:
        mark, good = say("export_ui.cell_prompt_differs", lang), False
    elif cell.get("same"):
        mark, good = say("export_ui.cell_same", lang), True
    else:
        index = cell.get("first_difference")  # 0-based in verify.json; a reader counts from 1
        mark, good = say("export_ui.cell_differs", lang, index="?" if index is None else index + 1,
                         token=_token(cell.get("token"), lang), studio=_token(cell.get("studio_token"), lang)), False
    extra = "" if good else f"<div class='answer {DATA_CLASS}'>{answer}</div>"
    return f"<td><span class='mark' style='color:{OK if good else BAD}'>{html.escape(mark)}</span>{extra}</td>"


def _token(token: str | None, lang: str) -> str:
    return say("export_ui.cell_end", lang) if token is None else repr(token)


def commands_text(folder: Path, manifest: dict, lang: str, workspace) -> str:
    """What to run next: `ollama create` for Ollama, run-and-publish for a Space; "" for the others."""
    target, where = manifest.get("target"), shlex.quote(str(folder))
    if target == "ollama":
        lines = (folder / "commands.txt").read_text(encoding="utf-8").splitlines() \
            if (folder / "commands.txt").is_file() else []
        return "\n".join([say("export_ui.cmd_ollama", lang), f"cd {where}", *lines])
    if target != "space":
        return ""
    repo = REPO_PLACEHOLDER
    lines = [say("export_ui.cmd_run_local", lang), f"cd {where}", "pip install -r requirements.txt"]
    from ..export_space import DEMO_HUB_NAME

    base = read_json(folder / "space_config.json").get("base_model")
    local = _demo_base(manifest, workspace) if base in ("", None, DEMO_HUB_NAME) else None
    if local is not None:
        lines += [say("export_ui.cmd_demo_base", lang), f"BASE_MODEL_PATH={shlex.quote(str(local))} python app.py"]
    else:
        lines.append("python app.py")
    lines += ["", say("export_ui.cmd_push_hf", lang, repo=repo), f"hf upload {repo} {where} . --repo-type space",
              "", say("export_ui.cmd_push_ms", lang, repo=repo),
              f"git clone https://www.modelscope.cn/studios/{repo}.git ms-space",
              f"cp -r {where}/. ms-space/ && cd ms-space && git add -A && git commit -m export && git push"]
    return "\n".join(lines)


def _demo_base(manifest: dict, workspace) -> Path | None:
    from ..errors import StudioError
    from ..models import resolve_model_path

    try:
        return resolve_model_path(manifest.get("base_model") or "", workspace)
    except (StudioError, OSError):
        return None


# --- the run's exports ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportEntry:
    folder: Path
    name: str           # the export's folder name (for one being written: the name it will have)
    state: str          # whole | writing | partial | foreign (catalogue export_ui.state_<state>)
    target: str
    quant: str
    created: str
    same: int | None    # prompts answered like the studio by every source, None without a proof
    count: int


def run_exports(run_dir: Path | None) -> list[ExportEntry]:
    """Every folder under run/exports/, newest first: whole exports, ones being written, ones left half way."""
    root = Path(run_dir) / "exports" if run_dir is not None else None
    if root is None or not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        if not folder.is_dir() or export.OLD in folder.name:
            continue
        if folder.name.startswith(".") and export.PARTIAL in folder.name:
            name, pid = folder.name[1:].rsplit(export.PARTIAL, 1)
            if not pid.isdigit():
                continue  # the merged model a GGUF export works from (.<name>.partial-<pid>-merged)
            state = "writing" if export._process_alive(int(pid)) else "partial"
            target, _, quant = name.partition("-")
            entries.append(ExportEntry(folder, name, state, target, quant, _mtime(folder), None, 0))
            continue
        if folder.name.startswith("."):
            continue
        manifest, table = read_json(folder / "export.json"), read_json(folder / "verify.json")
        if not export.is_export(folder) or not table.get("prompts"):
            entries.append(ExportEntry(folder, folder.name, "foreign", "", "", _mtime(folder), None, 0))
            continue
        prompts = table["prompts"]
        same = sum(all(c.get("same") and c.get("prompt_same", True) for c in r["answers"].values()) for r in prompts)
        entries.append(ExportEntry(folder, folder.name, "whole", manifest.get("target", ""),
                                   manifest.get("quant") or "",
                                   _created(manifest, folder), same, len(prompts)))
    return sorted(entries, key=lambda e: (e.created, e.name), reverse=True)


def exports_frame(entries: list[ExportEntry], lang: str):
    import pandas as pd

    rows = []
    for e in entries:
        key = "export_ui.proof_same" if e.same == e.count else "export_ui.proof_differs"
        proof = "" if e.same is None else say(key, lang, same=e.same, count=e.count)
        target = say(f"export_ui.target_{e.target}", lang) if e.target in export.TARGETS else e.target
        rows.append([e.name, " ".join(p for p in (target, e.quant) if p),
                     say(f"export_ui.state_{e.state}", lang), proof, format_bytes(folder_bytes(e.folder)), e.created])
    keys = ("col_export", "col_target", "col_state", "col_proof", "col_size", "col_created")
    return pd.DataFrame(rows, columns=[say(f"export_ui.{key}", lang) for key in keys])


def exports_stamp(run_dir: Path | None) -> tuple:
    """What changes when an export of the run appears, is replaced or goes: the poll redraws then."""
    root = Path(run_dir) / "exports" if run_dir is not None else None
    if root is None or not root.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in root.iterdir()))


def _created(manifest: dict, folder: Path) -> str:
    value = str(manifest.get("created") or "")
    return value[:19].replace("T", " ") if value else _mtime(folder)


def _mtime(folder: Path) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(folder.stat().st_mtime))
    except OSError:
        return ""

