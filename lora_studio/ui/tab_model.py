"""模型 Model tab: pick a model (catalog, workspace, custom id or path), download it, read its facts."""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..catalog import find_entry, load_catalog
from ..errors import ModelError
from ..hub_local import format_bytes, list_local_models
from ..models import DEMO_MODEL, hub_folder_name
from .state import Studio, guarded

MODEL_FIELDS = ["model_name_or_path", "model_source", "model_revision", "dtype", "trust_remote_code"]


def model_choices() -> list[tuple[str, str]]:
    """(label, value) pairs: the demo, the catalog, and whatever else is in the workspace."""
    choices = [("demo-tiny · built-in demo (offline) · 内置演示模型", DEMO_MODEL)]
    catalog = load_catalog()
    for entry in catalog:
        hub_id = entry.modelscope_id or entry.huggingface_id
        if hub_id:
            choices.append((f"{entry.name} · {entry.parameters_label} · {hub_id}", hub_id))
    known = {value for _, value in choices}
    for local in list_local_models():
        if local.name not in known and local.name != DEMO_MODEL:
            choices.append((f"{local.name} · {format_bytes(local.size)} · workspace", local.name))
    return choices


def model_facts(name: str, trust_remote_code: bool) -> str:
    """Markdown facts about a model, from the catalog and its config.json when it is on disk."""
    name = (name or DEMO_MODEL).strip()
    entry = find_entry(name)
    config, folder = _local_config(name)
    rows = [("model", name)]
    if entry:
        rows += [("parameters", entry.parameters_label), ("download", f"{entry.download_size_gb:g} GB"),
                 ("memory to train (bf16, LoRA, Zhen Huan preset)", f"≈ {entry.train_memory_gb_bf16:g} GB"),
                 ("template", entry.template), ("licence", entry.licence)]
    if config is not None:
        rows += [("on disk", str(folder)), ("architecture", config.get("model_type", "?")),
                 ("dtype", str(config.get("torch_dtype") or config.get("dtype") or "?")),
                 ("layers × hidden", f"{config.get('num_hidden_layers', '?')} × {config.get('hidden_size', '?')}"),
                 ("vocabulary", str(config.get("vocab_size", "?")))]
    else:
        rows.append(("on disk", "not downloaded yet · 尚未下载" if name != DEMO_MODEL
                     else "built on first use (about a minute) · 首次使用时自动构建"))
    table = [f"| {k} | {html.escape(str(v))} |" for k, v in rows]
    lines = [table[0], "|---|---|", *table[1:]]  # the model's name heads the table
    remote = (entry.needs_remote_code if entry else False) or bool(config and config.get("auto_map"))
    if remote:
        lines.append("\n⚠️ **This model ships its own Python code** (remote code). "
                     + ("trust_remote_code is ON: that code will run on this machine."
                        if trust_remote_code else "LoRA Studio loads it without that code where it can; "
                        "enable trust_remote_code only for authors you trust.")
                     + " · 此模型自带 Python 代码，仅在信任作者时开启“信任远程代码”。")
    if entry:
        lines.append(f"\n{entry.notes_en}\n\n{entry.notes_zh}")
    if not entry and config is None and name != DEMO_MODEL:
        lines.append("\nNot in the catalog and not found locally: give a hub id (owner/name) and press Download, "
                     "or a folder that holds config.json. · 不在目录中且本地没有：填写模型库 ID 后点击下载，或填写本地文件夹。")
    return "\n".join(lines)


def _local_config(name: str) -> tuple[dict | None, Path | None]:
    from ..config import workspace

    candidates = [Path(name).expanduser(), workspace() / "models" / name,
                  workspace() / "models" / hub_folder_name(name)]
    for folder in candidates:
        try:
            if (folder / "config.json").is_file():
                return json.loads((folder / "config.json").read_text(encoding="utf-8")), folder
        except (OSError, ValueError):
            continue
    return None, None


def local_models_table() -> list[list]:
    return [[m.name, format_bytes(m.size), "✓" if m.complete else "✗ " + "; ".join(m.missing), str(m.path)]
            for m in list_local_models()]


def catalog_table() -> list[list]:
    return [[e.name, e.modelscope_id or e.key, e.parameters_label, f"{e.download_size_gb:g}",
             f"{e.train_memory_gb_bf16:g}", "⚠️" if e.needs_remote_code else "", e.licence]
            for e in load_catalog()]


def download_html(job) -> str:
    """A progress bar with speed and ETA for the studio's download job."""
    from ..events import DownloadProgress, Failed, Finished, Log

    if job is None:
        return ""
    progress = job.events.last(DownloadProgress)
    end = job.events.last(Finished) or job.events.last(Failed)
    done, total = (progress.bytes_done, progress.bytes_total) if progress else (0, 0)
    percent = 100 * done / total if total else 0
    parts = [f"<b>{html.escape(job.model_id)}</b> · {job.state}",
             f"{format_bytes(done)} / {format_bytes(total)}" if total else ""]
    if progress and job.state == "running":
        parts.append(f"{format_bytes(progress.speed)}/s")
        if progress.eta is not None:
            parts.append(f"ETA {_duration(progress.eta)}")
        if progress.current_file:
            parts.append(html.escape(progress.current_file))
    message = ""
    if isinstance(end, Failed):
        message = f"<div class='studio-error'>{html.escape(end.message)}</div>"
    elif (last := job.events.last(Log)) is not None:
        message = f"<div>{html.escape(last.message)}</div>"
    return (f"<div class='studio-progress'><progress max='100' value='{percent:.1f}'></progress> "
            f"{percent:.0f}%</div><div>{' · '.join(p for p in parts if p)}</div>{message}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def build(studio: Studio, form, i18n) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=3):
            fields = form.render(MODEL_FIELDS)
            ui.name = form.widgets["model_name_or_path"]
            with gr.Row():
                ui.download = gr.Button(i18n("model.download"), variant="primary", size="sm")
                ui.cancel = gr.Button(i18n("model.cancel"), size="sm")
                ui.refresh = gr.Button(i18n("model.refresh"), size="sm")
            ui.progress = gr.HTML(elem_id="download-progress")
        with gr.Column(scale=2):
            ui.facts = gr.Markdown(model_facts(DEMO_MODEL, False), label=i18n("model.facts"),
                                   elem_id="model-facts")
    del fields
    ui.local = gr.Dataframe(headers=["name", "size", "complete", "folder"], label=i18n("model.local"),
                            interactive=False, wrap=True)
    ui.catalog = gr.Dataframe(catalog_table(), headers=["model", "id", "params", "download GB",
                                                         "train GB", "remote code", "licence"],
                              label=i18n("model.catalog"), interactive=False, wrap=True,
                              column_widths=["19%", "22%", "7%", "9%", "8%", "9%", "26%"])
    ui.timer = gr.Timer(1.0, active=False)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    trust = form.widgets["trust_remote_code"]
    source, revision = form.widgets["model_source"], form.widgets["model_revision"]

    @guarded
    def on_name_change(name, trust_remote_code):
        return model_facts(name, trust_remote_code)

    @guarded
    def on_refresh_click(name):
        return gr.update(choices=model_choices(), value=name), local_models_table()

    @guarded
    def on_download_click(name, source_value, revision_value):
        from ..hub import DownloadJob

        if studio.download is not None and studio.download.state == "running":
            raise ModelError("a download is already running", studio.download.model_id,
                             "Wait for it or cancel it first.")
        if (name or "").strip() == DEMO_MODEL:
            raise ModelError("the demo model is built locally, not downloaded", DEMO_MODEL,
                             "Just use it: it is built the first time a tab needs it.")
        studio.download = DownloadJob(name, source_value, revision_value).start()
        return download_html(studio.download), gr.Timer(active=True)

    def on_cancel_click():
        if studio.download is not None:
            studio.download.cancel()
        return download_html(studio.download)

    def on_timer_tick(name, trust_remote_code):
        job = studio.download
        still = job is not None and job.state == "running"
        updates = (download_html(job), gr.Timer(active=still))
        if still:
            return (*updates, gr.update(), gr.update())
        return (*updates, local_models_table(), model_facts(name, trust_remote_code))

    gr.on([ui.name.change, trust.change], on_name_change, [ui.name, trust], ui.facts, api_name="model_facts",
          show_progress="hidden")
    ui.refresh.click(on_refresh_click, ui.name, [ui.name, ui.local], api_name="refresh_models")
    ui.download.click(on_download_click, [ui.name, source, revision], [ui.progress, ui.timer],
                      api_name="download_model")
    ui.cancel.click(on_cancel_click, None, ui.progress, api_name="cancel_download")
    ui.timer.tick(on_timer_tick, [ui.name, trust], [ui.progress, ui.timer, ui.local, ui.facts],
                  show_progress="hidden", api_visibility="private")


def on_load(studio: Studio):
    """Page-load values: the model choices, the local models and a running download, if any."""
    running = studio.download is not None and studio.download.state == "running"
    return (gr.update(choices=model_choices()), local_models_table(), download_html(studio.download),
            gr.Timer(active=running))
