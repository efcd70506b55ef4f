"""数据 Dataset tab: choose data (bundled sample, upload, path), page through it, run the doctor, inspect.

Handlers read the settings widgets (`form.inputs()`), so what the doctor and the inspector show is
exactly what a run started now would train on: same files, template, system prompt, cutoff and dedupe.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..config import RunConfig
from . import dataset_view as view
from .i18n import language_of
from .state import Studio, guarded

DATA_FIELDS = ["data_files", "data_format", "system_prompt", "cutoff_len", "val_size", "dedupe", "max_samples"]


def build(studio: Studio, form, i18n, config: RunConfig) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=2):
            form.render(DATA_FIELDS[:3], config)
            with gr.Row():
                ui.sample = gr.Button(i18n("data.sample"), size="sm")
                ui.load = gr.Button(i18n("data.load"), variant="primary", size="sm", elem_id="data-load")
            ui.upload = gr.File(label=i18n("data.upload"), file_count="multiple", file_types=[".json", ".jsonl"],
                                height=120)
        with gr.Column(scale=1):
            form.render(DATA_FIELDS[3:], config)
    with gr.Row():
        with gr.Column(scale=3):
            ui.table = gr.Dataframe(headers=["#", "system", "user", "assistant"], label=i18n("data.table"),
                                    interactive=False, wrap=True, max_height=420, elem_id="data-table",
                                    column_widths=["6%", "18%", "30%", "46%"])
            with gr.Row():
                ui.prev = gr.Button(i18n("data.prev"), size="sm")
                ui.page = gr.Number(1, label=i18n("data.page"), precision=0, minimum=1, show_label=False,
                                    container=False)
                ui.pages = gr.Markdown("/ 1")
                ui.next = gr.Button(i18n("data.next"), size="sm")
        with gr.Column(scale=2):
            ui.doctor = gr.Markdown(label=i18n("data.doctor"), elem_id="data-doctor")
            ui.histogram = gr.BarPlot(x=view.LENGTH, y=view.COUNT, color=view.FITS, label=i18n("data.histogram"),
                                      elem_id="data-histogram", x_label_angle=-30,
                                      color_map={"fits": "#6fbf73", "不截断": "#6fbf73",
                                                 "partly truncated": "#e0b050", "部分截断": "#e0b050",
                                                 "truncated": "#d9534f", "截断": "#d9534f"})
    with gr.Accordion(i18n("data.inspector"), open=True):
        with gr.Row():
            ui.record = gr.Number(1, label=i18n("data.record"), precision=0, minimum=1, scale=1)
            ui.inspect = gr.Button(i18n("data.inspect"), size="sm", scale=0, elem_id="data-inspect")
            ui.summary = gr.Markdown(elem_id="inspector-summary")
        ui.tokens = gr.HighlightedText(label=i18n("data.tokens"), color_map=view.COLORS, show_legend=True,
                                       combine_adjacent=False, show_inline_category=False,
                                       elem_id="inspector-tokens")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    import pandas as pd

    settings = form.inputs()
    data_files = form.widgets["data_files"]

    @guarded
    def on_load_click(request: gr.Request, *values):
        config = form.to_config(values)
        records = view.load(config)
        renderer = studio.renderer(config)
        markdown, bars = view.doctor(records, config, renderer, language_of(request, studio.lang))
        frame = pd.DataFrame(bars, columns=[view.LENGTH, view.COUNT, view.FITS])
        # a plain frame: Gradio 6.31 ignores a second update that also sets `sort` (the bins are
        # labelled so that their alphabetical order is their numeric one)
        return view.page_rows(records, 1), 1, f"/ {view.page_count(records)}", markdown, frame

    @guarded
    def on_page_change(page, *values):
        records = view.load(form.to_config(values))
        page = min(max(1, int(page or 1)), view.page_count(records))
        return view.page_rows(records, page), page, f"/ {view.page_count(records)}"

    @guarded
    def on_inspect_click(request: gr.Request, number, *values):
        config = form.to_config(values)
        record = view.pick(view.load(config), number)
        segments, counts = view.token_segments(record, studio.renderer(config), config.cutoff_len)
        return segments, view.inspector_summary(counts, language_of(request, studio.lang))

    def on_sample_click():
        return view.sample_path()

    @guarded
    def on_upload_upload(files):
        target = studio.workspace / "data"
        saved = []
        for file in files or []:
            # the run config must not point at Gradio's temporary copy
            saved.append(str(view.keep_upload(Path(file if isinstance(file, str) else file.name), target)))
        return "\n".join(saved) if saved else gr.update()

    loaded = ui.load.click(on_load_click, settings, [ui.table, ui.page, ui.pages, ui.doctor, ui.histogram],
                           api_name="load_dataset")
    loaded.then(on_inspect_click, [ui.record, *settings], [ui.tokens, ui.summary], api_visibility="private")
    ui.inspect.click(on_inspect_click, [ui.record, *settings], [ui.tokens, ui.summary], api_name="inspect_record")
    ui.record.submit(on_inspect_click, [ui.record, *settings], [ui.tokens, ui.summary], api_visibility="private")
    ui.page.submit(on_page_change, [ui.page, *settings], [ui.table, ui.page, ui.pages], api_name="dataset_page")
    ui.prev.click(lambda p: max(1, int(p or 1) - 1), ui.page, ui.page, api_visibility="private").then(
        on_page_change, [ui.page, *settings], [ui.table, ui.page, ui.pages], api_visibility="private")
    ui.next.click(lambda p: int(p or 1) + 1, ui.page, ui.page, api_visibility="private").then(
        on_page_change, [ui.page, *settings], [ui.table, ui.page, ui.pages], api_visibility="private")
    ui.sample.click(on_sample_click, None, data_files, api_visibility="private").then(
        on_load_click, settings, [ui.table, ui.page, ui.pages, ui.doctor, ui.histogram],
        api_visibility="private")
    ui.upload.upload(on_upload_upload, ui.upload, data_files, api_visibility="private").then(
        on_load_click, settings, [ui.table, ui.page, ui.pages, ui.doctor, ui.histogram],
        api_visibility="private")
    ui.on_load_click = on_load_click
    ui.on_records_load = on_page_change  # the table alone needs no tokenizer: the page opens with it
    ui.on_inspect_click = on_inspect_click
