"""模型 Model tab: pick a model (catalog, workspace, custom id or path), download it, read its facts.

Everything here is worded per request, in the reader's language: the facts table, the catalog and
workspace tables (Gradio does not translate table headers), the model choices and the download line.

The "trust remote code" checkbox is the session's consent to run code a model ships; it is no
setting (no file can give it) and starts off on every page load. Every handler that loads a model
or a tokenizer takes it by the name TRUST.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..catalog import find_entry, load_catalog
from ..config import Setting, fields_in_group
from ..errors import ModelError
from ..hub_local import format_bytes, list_local_models
from ..i18n import msg, text
from ..models import DEMO_MODEL, resolve_model_path
from ..remote_code import code_files
from ..roots import Roots
from ..workspace import Workspace
from .i18n import clock, language_of
from .paths import check_model
from .state import Studio

# the settings a download takes, by name: the model's id, where from, which revision
DOWNLOAD_SETTINGS = (Setting.model_name_or_path, Setting.model_source, Setting.model_revision)
TRUST = "trust_remote_code"  # the consent checkbox's parameter name in every handler that loads a model
LOCAL_COLUMNS = ("ui.col_name", "ui.col_size", "ui.col_complete", "ui.col_folder")
CATALOG_COLUMNS = ("ui.col_model", "ui.col_id", "ui.col_params", "ui.col_download_gb", "ui.col_train_gb",
                   "ui.col_remote_code", "ui.col_licence")


def model_choices(workspace: Workspace, lang: str) -> list[tuple[str, str]]:
    """(label, value) pairs: the demo, the catalog, and whatever else is in the workspace."""
    choices = [(text("ui.demo_name", lang, name=DEMO_MODEL), DEMO_MODEL)]
    for entry in load_catalog():
        hub_id = entry.modelscope_id or entry.huggingface_id
        if hub_id:
            choices.append((f"{entry.name} · {entry.parameters_label} · {hub_id}", hub_id))
    known = {value for _, value in choices}
    for local in list_local_models(workspace):
        if local.name not in known and local.name != DEMO_MODEL:
            choices.append((text("ui.choice_local", lang, name=local.name, size=format_bytes(local.size)),
                            local.name))
    return choices


def model_facts(name: str, trust_remote_code: bool, workspace: Workspace, lang: str,
                roots: Roots | None = None) -> str:
    """Markdown facts about a model, from the catalog and its config.json when it is on disk (in the roots)."""
    name = (name or DEMO_MODEL).strip()
    entry = find_entry(name)
    refused = None
    try:
        config, folder = _local_config(name, workspace, roots or Roots.for_studio(workspace))
    except ModelError as exc:  # a folder outside the roots: said in place, while the name is being typed
        (config, folder), refused = (None, None), exc.render(lang)
    rows = [("ui.fact_model", name)]
    if entry:
        rows += [("ui.fact_parameters", entry.parameters_label),
                 ("ui.fact_download", f"{entry.download_size_gb:g} GB"),
                 ("ui.fact_train_memory", f"≈ {entry.train_memory_gb_bf16:g} GB"),
                 ("ui.fact_template", entry.template), ("ui.fact_licence", entry.licence_text(lang))]
    if config is not None:
        rows += [("ui.fact_on_disk", str(folder)), ("ui.fact_architecture", config.get("model_type", "?")),
                 ("ui.fact_dtype", _weights_dtype(config)),
                 ("ui.fact_layers", f"{config.get('num_hidden_layers', '?')} × {config.get('hidden_size', '?')}"),
                 ("ui.fact_vocabulary", str(config.get("vocab_size", "?")))]
    else:
        rows.append(("ui.fact_on_disk", text("ui.demo_on_first_use" if name == DEMO_MODEL else "ui.not_downloaded",
                                             lang)))
    table = [f"| {text(key, lang)} | {html.escape(str(value))} |" for key, value in rows]
    lines = [table[0], "|---|---|", *table[1:]]  # the model's name heads the table
    if (entry.needs_remote_code if entry else False) or bool(folder and code_files(folder, config)):
        key = "ui.remote_code_on" if trust_remote_code else "ui.remote_code_off"
        lines.append("\n⚠️ " + text(key, lang, key=text("ui.trust_remote_code", lang)))
    if entry:
        lines.append("\n" + entry.notes(lang))
    if refused:
        lines.append(f"\n<span class='studio-error'>{html.escape(refused)}</span>")
    elif not entry and config is None and name != DEMO_MODEL:
        lines.append("\n" + text("ui.model_unknown", lang))
    return "\n".join(lines)


def _weights_dtype(config: dict) -> str:
    # transformers 4 wrote torch_dtype; transformers 5 writes the name our setting has (it is spelled
    # the way transformers spells it)
    return str(config.get("torch_dtype") or config.get("dtype") or "?")


def _local_config(name: str, workspace: Workspace, roots: Roots) -> tuple[dict | None, Path | None]:
    """The model's config.json where the library would load it; a ModelError for a folder outside the roots."""
    from ..demo_model import demo_model_path

    check_model(roots, name, workspace)
    try:
        # the demo model is read where it will be built, not built for a look at its facts
        folder = demo_model_path(workspace) if name == DEMO_MODEL else resolve_model_path(name, workspace)
        values = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ModelError, OSError, ValueError):
        return None, None
    return (values, folder) if isinstance(values, dict) else (None, None)


def _frame(keys: tuple, rows: list[list], lang: str):
    """A table with its headers in `lang` (Gradio does not translate headers itself)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=[text(key, lang) for key in keys])


def local_models_table(workspace: Workspace, lang: str):
    rows = [[m.name, format_bytes(m.size), "✓" if m.complete else "✗ " + m.missing_text(lang), str(m.path)]
            for m in list_local_models(workspace)]
    return _frame(LOCAL_COLUMNS, rows, lang)


def catalog_table(lang: str):
    return _frame(CATALOG_COLUMNS, [[e.name, e.modelscope_id or e.key, e.parameters_label,
                                     f"{e.download_size_gb:g}", f"{e.train_memory_gb_bf16:g}",
                                     "⚠️" if e.needs_remote_code else "", e.licence_text(lang)]
                                    for e in load_catalog()], lang)


def download_html(job, lang: str) -> str:
    """A progress bar with speed and ETA for the studio's download job."""
    from ..events import DownloadProgress, Failed, Finished, Log

    if job is None:
        return ""
    progress = job.events.last(DownloadProgress)
    end = job.events.last(Finished) or job.events.last(Failed)
    done, total = (progress.bytes_done, progress.bytes_total) if progress else (0, 0)
    percent = 100 * done / total if total else 0
    parts = [f"<b>{html.escape(job.model_id)}</b> · {text(f'status.{job.state}', lang)}",
             f"{format_bytes(done)} / {format_bytes(total)}" if total else ""]
    if progress and job.state == "running":
        parts.append(f"{format_bytes(progress.speed)}/s")
        if progress.eta is not None:
            parts.append(text("ui.eta_in", lang, time=clock(progress.eta)))
        if progress.current_file:
            parts.append(html.escape(progress.current_file))
    message = ""
    if isinstance(end, Failed):
        message = f"<div class='studio-error'>{html.escape(end.text.render(lang))}</div>"
    elif (last := job.events.last(Log)) is not None:
        message = f"<div>{html.escape(last.text.render(lang))}</div>"
    return (f"<div class='studio-progress'><progress max='100' value='{percent:.1f}'></progress> "
            f"{percent:.0f}%</div><div>{' · '.join(p for p in parts if p)}</div>{message}")


def build(studio: Studio, form, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=3):
            form.render(fields_in_group("model"))
            ui.name = form.widgets[Setting.model_name_or_path]
            # consent for this page only: value False on every load, never read from a file
            ui.trust = gr.Checkbox(False, label=labels("ui.trust_remote_code"),
                                   info=labels("ui.trust_remote_code_help"), elem_id="trust-remote-code")
            with gr.Row():
                ui.download = gr.Button(labels("ui.model_download"), variant="primary", size="sm")
                ui.cancel = gr.Button(labels("ui.model_cancel"), size="sm")
                ui.refresh = gr.Button(labels("ui.model_refresh"), size="sm")
            ui.progress = gr.HTML(elem_id="download-progress")
        with gr.Column(scale=2):
            ui.facts = gr.Markdown(label=labels("ui.model_facts"), elem_id="model-facts")
    ui.local = gr.Dataframe(label=labels("ui.model_local"), interactive=False, wrap=True, elem_id="local-models")
    ui.catalog = gr.Dataframe(label=labels("ui.model_catalog"), interactive=False, wrap=True, elem_id="catalog",
                              column_widths=["19%", "22%", "7%", "9%", "8%", "9%", "26%"])
    ui.timer = gr.Timer(1.0, active=False)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    guarded = studio.guarded
    facts_inputs = {Setting.model_name_or_path: ui.name, TRUST: ui.trust}
    download_inputs = {name: form.widgets[name] for name in DOWNLOAD_SETTINGS}

    def facts(settings: dict, lang: str) -> str:
        return model_facts(str(settings[Setting.model_name_or_path] or ""), settings[TRUST] is True,
                           studio.workspace, lang, studio.roots)

    @guarded
    def on_name_change(request: gr.Request, **settings):
        return facts(settings, language_of(request, studio.lang))

    @guarded
    def on_refresh_click(name, request: gr.Request):
        lang = language_of(request, studio.lang)
        return gr.update(choices=model_choices(studio.workspace, lang), value=name), \
            local_models_table(studio.workspace, lang)

    @guarded
    def on_download_click(request: gr.Request, **settings):
        from ..hub import DownloadJob

        values = form.checked(settings)
        name = values[Setting.model_name_or_path].strip()
        if name == DEMO_MODEL:
            raise ModelError(msg("ui.demo_not_downloaded"), DEMO_MODEL, msg("ui.demo_not_downloaded_fix"))
        job = studio.start(studio.downloads, lambda: DownloadJob(name, studio.workspace, values[Setting.model_source],
                                                                 values[Setting.model_revision]), request)
        return download_html(job, language_of(request, studio.lang)), gr.Timer(active=True)

    @guarded
    def on_cancel_click(request: gr.Request):
        job = studio.download
        if job is not None and job.is_active:
            studio.control(job, request, job.model_id, "cancel")
            job.cancel()
        return download_html(job, language_of(request, studio.lang))

    def on_timer_tick(request: gr.Request, **settings):
        job, lang = studio.download, language_of(request, studio.lang)
        still = job is not None and job.is_active
        updates = (download_html(job, lang), gr.Timer(active=still))
        if still:
            return (*updates, gr.update(), gr.update())
        return (*updates, local_models_table(studio.workspace, lang), facts(settings, lang))

    def on_page_load(request: gr.Request, **settings):
        """The model choices, both tables, the facts and a running download, in the reader's language."""
        lang = language_of(request, studio.lang)
        running = studio.download is not None and studio.download.is_active
        return (gr.update(choices=model_choices(studio.workspace, lang)),
                local_models_table(studio.workspace, lang), catalog_table(lang), facts(settings, lang),
                download_html(studio.download, lang), gr.Timer(active=running))

    gr.on([ui.name.change, ui.trust.change], on_name_change, None, ui.facts,
          inputs_kwargs=facts_inputs, api_name="model_facts", show_progress="hidden")
    ui.refresh.click(on_refresh_click, ui.name, [ui.name, ui.local], api_name="refresh_models")
    ui.download.click(on_download_click, None, [ui.progress, ui.timer], inputs_kwargs=download_inputs,
                      api_name="download_model")
    ui.cancel.click(on_cancel_click, None, ui.progress, api_name="cancel_download")
    ui.timer.tick(on_timer_tick, None, [ui.progress, ui.timer, ui.local, ui.facts], inputs_kwargs=facts_inputs,
                  show_progress="hidden", api_visibility="private")
    ui.on_page_load = on_page_load
    ui.page_load_inputs = facts_inputs
    ui.page_load_outputs = [ui.name, ui.local, ui.catalog, ui.facts, ui.progress, ui.timer]
