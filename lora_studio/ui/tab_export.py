"""导出 Export tab: a run's adapter out as a merged model, a GGUF, an Ollama model or a Space, with its proof.

Pick a run and a checkpoint (by default the one marked best, else the final adapter), a target, and
for GGUF and Ollama a quant and optionally a llama.cpp folder of your own; Start runs an
`export.ExportJob` in the studio's one `exports` JobSlot (the library does the work; this tab only
starts, stops and shows it). A gr.Timer polls once a second and redraws only when the job's events or
the run's exports/ folder changed: the job's step and the stage within it as a bar, the log's tail,
and, once an export is whole, its folder, size, the proof table from its verify.json, and what to run
next (`ollama create`, or how to start and publish the Space). "Fetch llama.cpp" fetches the
converter once into the workspace (llama_cpp.fetch) as a job in the same slot.

A run is named as the picker shows it and taken only from the workspace's runs/; a checkpoint only
by the name of one of that run's whole adapters; a llama.cpp folder only inside the studio's roots
(ui/paths.py). With --auth an export is stopped only by whoever started it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import export, llama_cpp, probes
from ..config import load_yaml
from ..errors import JobError, StudioError
from ..events import ExportProgress, Finished, Log
from ..i18n import msg
from ..jobs import Job
from ..runs import adapter_dirs
from .access import LOCAL_USER, user_of
from .export_view import (LOG_LINES, adapter_label, commands_text, exports_frame, exports_stamp, log_tail,
                          parity_html, read_json, result_html, run_exports, status_html)
from .i18n import language_of, say
from .paths import run_folder
from .state import Studio
from .tab_model import TRUST


class FetchJob(Job):
    """llama.cpp's converter fetched once into the workspace (llama_cpp.fetch), as a job the tab can show."""
    thread_name = "lora-studio-fetch-llama-cpp"

    def __init__(self, workspace):
        super().__init__()
        self.workspace = workspace

    def work(self) -> str:
        self.emit(ExportProgress(stage=llama_cpp.STAGE_FETCH, done=0, total=1))
        converter = llama_cpp.fetch(self.workspace, log=lambda text: self.emit(Log(text)))
        self.folder = converter.folder
        self.emit(ExportProgress(stage=llama_cpp.STAGE_FETCH, done=1, total=1))
        return "completed"

    def finished_event(self, status: str) -> Finished:
        return Finished(status=status, output=str(getattr(self, "folder", "")))

    def describe(self) -> str:
        return "llama.cpp"


# --- what the pickers offer ------------------------------------------------------------------------
def run_names(studio: Studio) -> list[str]:
    """The workspace's runs an export can read (those with a config.yaml), newest first."""
    return [r.name for r in studio.scan_runs() if r.config is not None]


def checkpoint_choices(run_dir: Path, lang: str) -> tuple[list[tuple[str, str]], str | None]:
    """(label, name) of the run's whole adapters, and the default: the one marked best, else the first
    (the final adapter, else the newest checkpoint), as export.resolve_adapter takes them."""
    folders = adapter_dirs(run_dir)
    best = probes.best_adapter(run_dir)
    choices = []
    for folder in folders:
        name = probes.adapter_name(run_dir, folder)
        label = adapter_label(name, lang)
        if best is not None and folder == best:
            label = say("evaluation.best_label", lang, label=label)
        choices.append((label, name))
    default = probes.adapter_name(run_dir, best) if best is not None else (choices[0][1] if choices else None)
    return choices, default


def target_choices(lang: str) -> list[tuple[str, str]]:
    return [(say(f"export_ui.target_{target}", lang), target) for target in export.TARGETS]


def quant_choices(lang: str) -> list[tuple[str, str]]:
    """Every quant the GGUF export knows; the ones below 8 bits say they need llama.cpp's quantizer."""
    ready = llama_cpp.quantizer_available()
    choices = []
    for quant in export.known_quants():
        key = "quant_8bit" if quant == "q8_0" else "quant_full" if quant in ("f16", "bf16", "f32") else \
            "quant_ready" if ready else "quant_needs"
        choices.append((say(f"export_ui.{key}", lang, quant=quant), quant))
    return choices


def converter_line(studio: Studio, lang: str) -> str:
    try:
        found = llama_cpp.find_converter(studio.workspace)
        line = say("export_ui.converter_ready", lang, path=f"`{found.folder}`")
    except StudioError:
        line = say("export_ui.converter_missing", lang)
    if not llama_cpp.quantizer_available():
        line += "\n\n" + say("export_ui.quantizer_missing", lang)
    return line


def default_hub_id(studio: Studio, run_dir: Path) -> str:
    """The base model's hub id a Space of this run names: the catalogue's, else the run's model id; none
    for a local folder (the Space asks for one) or the demo model (its Space runs on a local copy)."""
    from ..export_space import base_model

    try:
        config = load_yaml(run_dir / "config.yaml")
        # base_model reads only these of an ExportContext
        found = base_model(SimpleNamespace(config=config, workspace=studio.workspace,
                                           request=SimpleNamespace(hub_id="")))
    except StudioError:
        return ""
    return found.huggingface or found.modelscope


# --- the tab ---------------------------------------------------------------------------------------
def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    gr.Markdown(labels("export_ui.intro"), elem_id="export-intro")
    with gr.Row():
        ui.run = gr.Dropdown([], label=labels("export_ui.run"), allow_custom_value=True, scale=3, elem_id="export-run")
        # any name may be sent (an API client has no list): only the run's own whole adapters are taken
        ui.checkpoint = gr.Dropdown([], label=labels("export_ui.checkpoint"), info=labels("export_ui.checkpoint_info"),
                                    allow_custom_value=True, scale=3, elem_id="export-checkpoint")
        ui.refresh = gr.Button(labels("export_ui.refresh"), size="sm", scale=1)
    ui.target = gr.Radio([(t, t) for t in export.TARGETS], value="merged", label=labels("export_ui.target"),
                         elem_id="export-target")
    gr.Markdown(labels("export_ui.targets_help"), elem_id="export-targets-help")
    with gr.Row(visible=False, equal_height=False) as ui.gguf_box:
        quants = export.known_quants()
        ui.quant = gr.Dropdown(list(quants), value="f16" if "f16" in quants else None, label=labels("export_ui.quant"),
                               info=labels("export_ui.quant_info"), scale=2, elem_id="export-quant",
                               allow_custom_value=True)  # a script may send any: the export names the known ones
        ui.llama_cpp = gr.Textbox(label=labels("export_ui.llama_cpp"), info=labels("export_ui.llama_cpp_info"),
                                  scale=3, elem_id="export-llama-cpp")
        with gr.Column(scale=2):
            ui.converter = gr.Markdown(elem_id="export-converter")
            ui.fetch = gr.Button(labels("export_ui.fetch"), size="sm", elem_id="export-fetch")
    with gr.Row(visible=False) as ui.space_box:
        ui.hub_id = gr.Textbox(label=labels("export_ui.hub_id"), info=labels("export_ui.hub_id_info"),
                               elem_id="export-hub-id")
    with gr.Row():
        ui.start = gr.Button(labels("export_ui.start"), variant="primary", elem_id="export-start")
        ui.stop = gr.Button(labels("export_ui.stop"), variant="stop", elem_id="export-stop")
    ui.notice = gr.Markdown(elem_id="export-notice")
    ui.status = gr.HTML(elem_id="export-status")
    ui.log = gr.Textbox(label=labels("export_ui.log"), lines=6, max_lines=LOG_LINES, interactive=False,
                        autoscroll=True, elem_id="export-log")
    ui.shown = gr.Dropdown([], label=labels("export_ui.shown"), elem_id="export-shown", allow_custom_value=True)
    ui.result = gr.HTML(elem_id="export-result")
    ui.parity = gr.HTML(elem_id="export-parity")
    ui.commands = gr.Code(language="shell", label=labels("export_ui.commands"), buttons=["copy"], interactive=False,
                          visible=False, elem_id="export-commands")
    ui.exports = gr.Dataframe(label=labels("export_ui.exports"), interactive=False, wrap=True, elem_id="export-list")
    ui.cursor = gr.State(None)
    ui.timer = gr.Timer(1.0)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, context) -> None:
    guarded, private = studio.guarded, {"api_visibility": "private"}

    def chosen(run) -> Path:
        if not str(run or "").strip():
            raise JobError(msg("export_ui.no_run_chosen"), msg("export_ui.where"), msg("export_ui.no_run_chosen_fix"))
        name, names = str(run).strip(), run_names(studio)
        if name not in names:
            raise JobError(msg("export_ui.not_a_run", name=name), "runs",
                           msg("export_ui.not_a_run_fix", runs=", ".join(names) or "-"))
        return run_folder(studio.roots, studio.workspace, name, names)

    def selected(run) -> Path | None:
        try:
            return chosen(run)
        except StudioError:
            return None

    def adapter_of(run_dir: Path, name) -> Path | None:
        name = str(name or "").strip()
        if not name:
            return None  # the job's default: the best one marked, else the final adapter
        folder = probes.adapter_by_name(run_dir, name)
        if folder is None:
            names = [probes.adapter_name(run_dir, f) for f in adapter_dirs(run_dir)]
            raise export.ExportError(msg("export_ui.not_a_checkpoint", name=name), run_dir.name,
                                     msg("export_ui.not_a_checkpoint_fix", names=", ".join(names) or "-"))
        return folder

    @guarded
    def on_start_click(run, checkpoint, target, quant, llama_cpp_folder, hub_id, request: gr.Request, **consent):
        run_dir = chosen(run)
        if (run_dir / "config.yaml").is_file():  # a run trained from the CLI may name files outside the roots
            studio.checked(load_yaml(run_dir / "config.yaml"))
        folder = str(llama_cpp_folder or "").strip()
        request_ = export.ExportRequest(run=run_dir, target=str(target or ""),
                                        quant=str(quant or "f16").strip().lower(), adapter=adapter_of(run_dir, checkpoint),
                                        llama_cpp=studio.roots.check(folder, export.ExportError) if folder else None,
                                        hub_id=str(hub_id or "").strip() if target == "space" else "")
        export.check_request(request_)
        if request_.target in export.QUANT_TARGETS:  # before a merge of minutes: the converter is there
            llama_cpp.find_converter(studio.workspace, request_.llama_cpp)
        trusted = consent.get(TRUST) is True
        job = studio.start(studio.exports, lambda: export.ExportJob(request_, studio.workspace,
                                                                     trust_remote_code=trusted), request)
        lang = language_of(request, studio.lang)
        target_name = say(f"export_ui.target_{request_.target}", lang)
        return say("export_ui.started", lang, run=job.run_dir.name, target=target_name)

    @guarded
    def on_stop_click(request: gr.Request):
        job = studio.exports.job
        if job is None or not job.is_active:
            raise JobError(msg("export_ui.nothing_to_stop"), msg("export_ui.where"))
        owner = studio.owners.owner(job)
        if owner is not None and owner != user_of(request):
            shown = owner if owner != LOCAL_USER else msg("ui.local_user")
            raise JobError(msg("export_ui.not_yours", name=job.describe(), owner=shown), msg("export_ui.where"),
                           msg("export_ui.not_yours_fix", owner=shown))
        job.stop()
        return say("export_ui.stopping", language_of(request, studio.lang))

    @guarded
    def on_fetch_click(request: gr.Request):
        lang = language_of(request, studio.lang)
        folder = llama_cpp.workspace_folder(studio.workspace)
        if llama_cpp.is_fetched(folder):
            return say("export_ui.fetch_already", lang, path=f"`{folder}`")
        studio.start(studio.exports, lambda: FetchJob(studio.workspace), request)
        return say("export_ui.fetch_started", lang)

    def on_runs_refresh(current):
        names = run_names(studio)
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    @guarded
    def on_run_change(run, request: gr.Request):
        run_dir, lang = selected(run), language_of(request, studio.lang)
        if run_dir is None:
            return gr.update(choices=[], value=None), gr.update(), ""
        choices, default = checkpoint_choices(run_dir, lang)
        notice = "" if choices else say("export_ui.no_adapter_yet", lang)
        return gr.update(choices=choices, value=default), default_hub_id(studio, run_dir), notice

    def on_target_change(target, request: gr.Request):
        lang = language_of(request, studio.lang)
        return (gr.update(visible=target in export.QUANT_TARGETS), gr.update(visible=target == "space"),
                converter_line(studio, lang))

    def on_page_load(run, target, request: gr.Request):
        lang = language_of(request, studio.lang)
        quants = export.known_quants()
        return (on_runs_refresh(run), gr.update(choices=target_choices(lang)),
                gr.update(choices=quant_choices(lang), value="f16" if "f16" in quants else None),
                *on_target_change(target, request))

    tick_outputs = [ui.status, ui.log, ui.exports, ui.shown, ui.result, ui.parity, ui.commands, ui.cursor]

    def on_timer_tick(run, shown, cursor, request: gr.Request):
        run_dir, lang, job = selected(run), language_of(request, studio.lang), studio.exports.job
        events = job.events.all() if job is not None else []
        mark = (str(run_dir), id(job), job.state if job else "", len(events), exports_stamp(run_dir), shown, lang)
        if mark == tuple(cursor or ()):
            return [gr.update()] * (len(tick_outputs) - 1) + [cursor]
        entries = run_exports(run_dir)
        names = [e.folder.name for e in entries if e.state == "whole"]
        just_done = (job is not None and job.state == "completed" and getattr(job, "run_dir", None) == run_dir
                     and tuple(cursor or ())[1:3] != mark[1:3])
        value = job.out.name if just_done and job.out.name in names else shown if shown in names else \
            (names[0] if names else None)
        folder = run_dir / "exports" / value if value else None
        table = _proof(folder)
        commands = commands_text(folder, read_json(folder / "export.json"), lang, studio.workspace) if table else ""
        mark = mark[:5] + (value, lang)
        return [status_html(job, lang), log_tail(events, lang), exports_frame(entries, lang),
                gr.update(choices=names, value=value), result_html(folder, table, lang), parity_html(table, lang),
                gr.update(value=commands, visible=bool(commands)), mark]

    def on_progress_poll(run: str = "") -> dict:
        """The export as data, for API clients: the job's state and stage, and the run's whole exports."""
        job = studio.exports.job
        run_dir = selected(run) if run else getattr(job, "run_dir", None)
        events = job.events.all() if job is not None else []
        progress = next((e for e in reversed(events) if isinstance(e, ExportProgress)), None)
        end = next((e for e in reversed(events) if isinstance(e, Finished)), None)
        return {"state": job.state if job else "", "stage": progress.stage if progress else "",
                "done": progress.done if progress else 0, "total": progress.total if progress else 0,
                "output": end.output if end else "", "message": events[-1].message if events else "",
                "exports": {e.name: e.state for e in run_exports(run_dir)}}

    poll = dict(fn=on_timer_tick, inputs=[ui.run, ui.shown, ui.cursor], outputs=tick_outputs, show_progress="hidden",
                **private)
    ui.timer.tick(**poll)
    ui.refresh.click(on_runs_refresh, ui.run, ui.run, api_name="list_export_runs")
    ui.run.change(on_run_change, ui.run, [ui.checkpoint, ui.hub_id, ui.notice], **private).then(**poll)
    ui.target.change(on_target_change, ui.target, [ui.gguf_box, ui.space_box, ui.converter], **private)
    ui.shown.input(**poll)
    ui.start.click(on_start_click, [ui.run, ui.checkpoint, ui.target, ui.quant, ui.llama_cpp, ui.hub_id], ui.notice,
                   inputs_kwargs={TRUST: context.trust}, api_name="start_export").then(**poll)
    ui.stop.click(on_stop_click, None, ui.notice, api_name="stop_export").then(**poll)
    ui.fetch.click(on_fetch_click, None, ui.notice, api_name="fetch_llama_cpp").then(**poll)
    gr.api(on_progress_poll, api_name="export_progress")
    context.demo.load(on_page_load, [ui.run, ui.target],
                      [ui.run, ui.target, ui.quant, ui.gguf_box, ui.space_box, ui.converter], **private)
    ui.on_timer_tick, ui.on_progress_poll = on_timer_tick, on_progress_poll


def _proof(folder: Path | None) -> dict | None:
    if folder is None:
        return None
    try:
        return export.read_verify(folder)
    except StudioError:
        return None
