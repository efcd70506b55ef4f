"""评估 Evaluate tab: the probe grid of a run's checkpoints, held-out metrics, and the best checkpoint.

Pick a run (its checkpoints; none ticked means all), start an evaluation (the studio's one
`evaluations` JobSlot; the job loads its own copy of the model, lora_studio/evaluation.py), and watch
the grid fill: a gr.Timer polls once a second and redraws only when the job or the run's result files
(probes.jsonl, metrics.json, best.json) changed. Below: the metrics of the base against each
checkpoint, the best and worst validation samples, and the control answers side by side.

"Mark best" writes run/best.json (probes.mark_best): chat's picker and export then default to it.
The probe set is edited here as lines and saved as run/probes.txt, which the evaluation prefers over
the run's config.yaml (that file stays exactly as trained); "load" reads a .txt/.json/.jsonl file
inside the studio's roots (ui/paths.py) into the box and saves it the same way. The two automatic
modes (evaluation_auto.py) are studio-wide: after every training run, or between saves on a GPU
(on a CPU the box is off: it would slow training).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import probes
from ..config import load_yaml
from ..errors import ConfigError, DataError, JobError
from ..evaluation import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, METRICS_FILE, EvalJob, EvalRequest, read_metrics
from ..evaluation_auto import AutoEvaluation
from ..events import EvalProgress, file_stamp
from ..i18n import msg
from .access import user_of
from .eval_tables import (control_frame, eval_job_for, grid_frame, metrics_frame, samples_frame, shown_prompts,
                          status_html)
from .i18n import language_of, say
from .paths import run_folder
from .state import Studio
from .tab_model import TRUST

RESULT_FILES = (probes.ANSWERS_FILE, METRICS_FILE, probes.BEST_FILE)  # a change redraws the tab


def run_names(studio: Studio) -> list[str]:
    """The workspace's runs an evaluation can read (those with a config.yaml), newest first."""
    return [r.name for r in studio.scan_runs() if r.config is not None]


def checkpoint_names(run_dir: Path) -> list[str]:
    return [t.name for t in probes.targets(run_dir)[1:]]


# --- the tab ---------------------------------------------------------------------------------------
def build(studio: Studio, labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        ui.run = gr.Dropdown([], label=labels("evaluation.ui_run"), allow_custom_value=True, scale=3,
                             elem_id="eval-run")
        ui.refresh = gr.Button(labels("evaluation.ui_refresh"), size="sm", scale=1)
    with gr.Row():
        # any name may be sent (an API client has no list): the job takes only the run's own checkpoints
        ui.checkpoints = gr.Dropdown([], multiselect=True, allow_custom_value=True, scale=3,
                                     label=labels("evaluation.ui_checkpoints"), info=labels("evaluation.ui_checkpoints_info"))
        ui.metrics = gr.Checkbox(True, label=labels("evaluation.ui_metrics"), info=labels("evaluation.ui_metrics_info"),
                                 scale=2)
        ui.max_new_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, label=labels("evaluation.ui_max_new_tokens"), scale=1)
    with gr.Row():
        ui.start = gr.Button(labels("evaluation.ui_start"), variant="primary", elem_id="eval-start")
        ui.stop = gr.Button(labels("evaluation.ui_stop"), variant="stop", elem_id="eval-stop")
    ui.notice = gr.Markdown(elem_id="eval-notice")
    ui.status = gr.HTML(elem_id="eval-status")
    ui.grid = gr.Dataframe(label=labels("evaluation.ui_grid"), interactive=False, wrap=True, elem_id="eval-grid")
    with gr.Row():
        ui.best = gr.Dropdown([], label=labels("evaluation.ui_best"), scale=3, elem_id="eval-best", allow_custom_value=True)
        ui.mark = gr.Button(labels("evaluation.ui_mark"), scale=1, elem_id="eval-mark")
    ui.metrics_table = gr.Dataframe(label=labels("evaluation.ui_metrics_table"), interactive=False,
                                    elem_id="eval-metrics")
    ui.samples = gr.Dataframe(label=labels("evaluation.ui_samples"), interactive=False, wrap=True,
                              elem_id="eval-samples")
    ui.control = gr.Dataframe(label=labels("evaluation.ui_control"), interactive=False, wrap=True,
                              elem_id="eval-controls")
    with gr.Accordion(labels("evaluation.ui_probe_set"), open=False):
        ui.probe_text = gr.Textbox(label=labels("evaluation.ui_probe_lines"), info=labels("evaluation.ui_probe_info"),
                                   lines=6, elem_id="eval-probes")
        with gr.Row():
            ui.save_probes = gr.Button(labels("evaluation.ui_save_probes"), size="sm")
            ui.probe_file = gr.Textbox(label=labels("evaluation.ui_probe_file"), scale=3)
            ui.load_probes = gr.Button(labels("evaluation.ui_load_probes"), size="sm")
    with gr.Accordion(labels("evaluation.ui_auto"), open=False):
        ui.auto_after = gr.Checkbox(False, label=labels("evaluation.ui_auto_after"))
        ui.auto_between = gr.Checkbox(False, label=labels("evaluation.ui_auto_between"),
                                      info=labels("evaluation.ui_auto_between_info"))
    ui.cursor = gr.State(None)
    ui.timer = gr.Timer(1.0)
    return ui


def wire(studio: Studio, ui: SimpleNamespace, context) -> None:
    guarded, private = studio.guarded, {"api_visibility": "private"}
    ui.auto = AutoEvaluation(studio.training, studio.evaluations, studio.workspace)

    def chosen(run) -> Path:
        if not str(run or "").strip():
            raise JobError(msg("evaluation.no_run_chosen"), msg("evaluation.where"), msg("evaluation.no_run_chosen_fix"))
        name, names = str(run).strip(), run_names(studio)
        if name not in names:  # only a run of the workspace with a config.yaml (it names the model)
            raise JobError(msg("evaluation.not_a_run", name=name), "runs",
                           msg("evaluation.not_a_run_fix", runs=", ".join(names) or "-"))
        return run_folder(studio.roots, studio.workspace, name, names)

    def selected(run) -> Path | None:
        try:
            return chosen(run)
        except JobError:
            return None

    tick_outputs = [ui.status, ui.grid, ui.metrics_table, ui.samples, ui.control, ui.best, ui.cursor]

    def on_timer_tick(run, cursor, request: gr.Request):
        run_dir, lang = selected(run), language_of(request, studio.lang)
        job = eval_job_for(studio, run_dir)
        stamps = tuple(file_stamp(run_dir / name) for name in RESULT_FILES) if run_dir else ()
        mark = (str(run_dir), stamps, id(job), job.state if job else "", len(job.events.all()) if job else 0, lang)
        if mark == tuple(cursor or ()):
            return [gr.update()] * (len(tick_outputs) - 1) + [cursor]
        if run_dir is None:
            empty = [gr.update(value=None)] * 4
            return [status_html(None, None, lang), *empty, gr.update(choices=[], value=None), mark]
        values, prompts = read_metrics(run_dir), shown_prompts(run_dir, job)
        names = checkpoint_names(run_dir)
        return [status_html(run_dir, job, lang), grid_frame(run_dir, prompts, job, lang), metrics_frame(values, lang),
                samples_frame(values, lang), control_frame(values, lang),
                gr.update(choices=names, value=probes.best_name(run_dir)), mark]

    def on_runs_refresh(current):
        names = run_names(studio)
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    @guarded
    def on_run_change(run, request: gr.Request):
        run_dir = selected(run)
        if run_dir is None:
            return gr.update(choices=[], value=[]), ""
        return gr.update(choices=checkpoint_names(run_dir), value=[]), "\n".join(probes.probe_set(run_dir))

    @guarded
    def on_start_click(run, checkpoints, metrics, max_new_tokens, request: gr.Request, **consent):
        run_dir = chosen(run)
        tokens = _whole(max_new_tokens)
        config = load_yaml(run_dir / "config.yaml")
        studio.checked(config, data=metrics is True and config.val_size > 0)  # what the job will read
        spec = ",".join(checkpoints or []) or "all"
        request_ = EvalRequest(run_dir, spec, metrics=metrics is True, max_new_tokens=tokens)
        trusted = consent.get(TRUST) is True
        studio.start(studio.evaluations, lambda: EvalJob(request_, studio.workspace, trust_remote_code=trusted), request)
        return say("evaluation.started", language_of(request, studio.lang), run=run_dir.name)

    @guarded
    def on_stop_click(request: gr.Request):
        job = studio.evaluations.job
        if job is None or not job.is_active:
            raise JobError(msg("evaluation.nothing_to_stop"), msg("evaluation.where"))
        owner = studio.owners.owner(job)
        if owner is not None and owner != user_of(request):
            raise JobError(msg("evaluation.not_yours", name=job.describe(), owner=owner), msg("evaluation.where"))
        job.stop()
        return say("evaluation.stopping", language_of(request, studio.lang))

    @guarded
    def on_mark_click(run, checkpoint, request: gr.Request):
        run_dir = chosen(run)
        folder = probes.mark_best(run_dir, str(checkpoint or "").strip() or None)
        lang = language_of(request, studio.lang)
        if folder is None:
            return say("evaluation.best_cleared", lang, run=run_dir.name)
        return say("evaluation.marked", lang, run=run_dir.name, name=probes.adapter_name(run_dir, folder))

    @guarded
    def on_save_probes_click(run, lines, request: gr.Request):
        run_dir = chosen(run)
        saved = probes.save_probe_set(run_dir, str(lines or "").splitlines())
        count = len(probes.load_probe_file(saved))
        return say("evaluation.probes_saved", language_of(request, studio.lang), count=count, path=saved.name)

    @guarded
    def on_load_probes_click(run, path, request: gr.Request):
        run_dir = chosen(run)
        prompts = probes.load_probe_file(studio.roots.check(str(path or ""), DataError))
        probes.save_probe_set(run_dir, prompts)
        return "\n".join(prompts), say("evaluation.probes_loaded", language_of(request, studio.lang),
                                       count=len(prompts), path=probes.PROBE_SET_FILE)

    @guarded
    def on_auto_change(after, between, request: gr.Request):
        mode = "between" if between is True else "after" if after is True else "off"
        ui.auto.set_mode(mode)
        return say(f"evaluation.auto_{mode}", language_of(request, studio.lang))

    def on_page_load():
        from ..evaluation import between_saves_available

        mode = ui.auto.mode
        return (on_runs_refresh(None), gr.update(value=mode != "off"),
                gr.update(value=mode == "between", interactive=between_saves_available()))

    def on_progress_poll(run: str = "") -> dict:
        """The evaluation as data, for API clients: the job's state and the run's grid."""
        run_dir = selected(run) if run else (Path(studio.evaluations.job.run_dir) if studio.evaluations.job else None)
        job = eval_job_for(studio, run_dir)
        progress = job.events.last(EvalProgress) if job else None
        prompts = shown_prompts(run_dir, job) if run_dir else []
        names, cells = probes.grid(probes.read_answers(run_dir), prompts) if run_dir else ([], {})
        return {"run": run_dir.name if run_dir else None, "state": job.state if job else "",
                "done": progress.done if progress else 0, "total": progress.total if progress else 0,
                "best": probes.best_name(run_dir) if run_dir else None, "prompts": prompts,
                "grid": {name: [cells[(name, p)].answer if (name, p) in cells else None for p in prompts]
                         for name in names},
                "metrics": read_metrics(run_dir).get("checkpoints", {}) if run_dir else {}}

    poll = dict(fn=on_timer_tick, inputs=[ui.run, ui.cursor], outputs=tick_outputs, show_progress="hidden", **private)
    ui.timer.tick(**poll)
    ui.refresh.click(on_runs_refresh, ui.run, ui.run, api_name="list_eval_runs")
    ui.run.change(on_run_change, ui.run, [ui.checkpoints, ui.probe_text], **private).then(**poll)
    ui.start.click(on_start_click, [ui.run, ui.checkpoints, ui.metrics, ui.max_new_tokens], ui.notice,
                   inputs_kwargs={TRUST: context.trust}, api_name="start_evaluation").then(**poll)
    ui.stop.click(on_stop_click, None, ui.notice, api_name="stop_evaluation")
    marked = ui.mark.click(on_mark_click, [ui.run, ui.best], ui.notice, api_name="mark_best_checkpoint")
    marked.then(**poll)
    chat = getattr(context, "chat", None)
    if chat is not None and hasattr(chat, "adapter"):
        def on_best_marked(run, request: gr.Request):
            """The chat tab's picker moves to the checkpoint just marked (its default from now on)."""
            from .tab_chat import adapter_choices

            run_dir = selected(run)
            best = probes.best_adapter(run_dir) if run_dir is not None else None
            choices = adapter_choices(studio.scan_runs(), language_of(request, studio.lang))
            return gr.update(choices=choices, value=str(best)) if best is not None else gr.update(choices=choices)

        marked.success(on_best_marked, ui.run, chat.adapter, **private)
    ui.save_probes.click(on_save_probes_click, [ui.run, ui.probe_text], ui.notice, api_name="save_probe_set")
    ui.load_probes.click(on_load_probes_click, [ui.run, ui.probe_file], [ui.probe_text, ui.notice],
                         api_name="load_probe_set")
    for box in (ui.auto_after, ui.auto_between):
        box.input(on_auto_change, [ui.auto_after, ui.auto_between], ui.notice, **private)
    gr.api(on_progress_poll, api_name="evaluation_progress")
    context.demo.load(on_page_load, None, [ui.run, ui.auto_after, ui.auto_between], **private)
    ui.on_timer_tick, ui.on_progress_poll = on_timer_tick, on_progress_poll


def _whole(value) -> int:
    """The max-new-tokens box's value as a whole number (the job checks its range)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number != int(number):
        raise ConfigError(msg("evaluation.bad_max_new_tokens", value=value, most=MAX_NEW_TOKENS), msg("evaluation.where"))
    return int(number)
