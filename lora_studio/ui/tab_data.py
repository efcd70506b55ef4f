"""数据 Dataset tab: choose data (bundled sample, upload, path), page through it, run the doctor, inspect.

Every file type the library reads (JSON, JSONL, CSV, TSV, Parquet) can be uploaded; the doctor adds
turns per record and, for character scripts, speakers and the lines left out.

Handlers take the settings by name (`form.widgets_by_name()`), so what the doctor and the inspector
show is exactly what a run started now would train on: same files, template, system prompt, cutoff
and dedupe. Files are read only inside the studio's roots and only when they are datasets
(ui/paths.py); uploads are checked before they are kept (ui/uploads.py). A step that follows another
runs on its success only, so a failure is one message, not one per step.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..config import RunConfig, Setting, fields_in_group
from ..data_parse import EXTENSIONS
from ..i18n import msg
from . import dataset_view as view
from .form import checked_number, is_compact
from .i18n import language_of, say
from .state import Studio
from .tab_model import TRUST
from .uploads import keep_uploads


def build(studio: Studio, form, labels, config: RunConfig) -> SimpleNamespace:
    ui = SimpleNamespace()
    names = fields_in_group("data")
    compact = [name for name in names if is_compact(form.specs[name])]
    with gr.Row():
        with gr.Column(scale=2):
            form.render([name for name in names if name not in compact], config)
            with gr.Row():
                ui.sample = gr.Button(labels("ui.data_sample"), size="sm")
                ui.load = gr.Button(labels("ui.data_load"), variant="primary", size="sm", elem_id="data-load")
            ui.upload = gr.File(label=labels("ui.data_upload"), file_count="multiple",
                                file_types=list(EXTENSIONS), height=120, elem_id="data-upload")
        with gr.Column(scale=1):
            form.render(compact, config)
    with gr.Row():
        with gr.Column(scale=3):
            ui.table = gr.Dataframe(label=labels("ui.data_table"), interactive=False, wrap=True, max_height=420,
                                    elem_id="data-table", column_widths=["6%", "18%", "30%", "46%"])
            with gr.Row():
                ui.prev = gr.Button(labels("ui.data_prev"), size="sm")
                # no minimum or precision: the handler checks the number (Gradio would refuse in English)
                ui.page = gr.Number(1, label=labels("ui.data_page"), show_label=False, container=False)
                ui.pages = gr.Markdown("/ 1")
                ui.next = gr.Button(labels("ui.data_next"), size="sm")
        with gr.Column(scale=2):
            ui.doctor = gr.Markdown(label=labels("ui.data_doctor"), elem_id="data-doctor")
            ui.histogram = gr.BarPlot(x=view.LENGTH, y=view.COUNT, color=view.FITS, label=labels("ui.data_histogram"),
                                      elem_id="data-histogram", x_label_angle=-30,
                                      color_map=view.color_map(view.FIT_COLORS))
    with gr.Accordion(labels("ui.data_inspector"), open=True):
        with gr.Row():
            ui.record = gr.Number(1, label=labels("ui.data_record"), scale=1)
            ui.inspect = gr.Button(labels("ui.data_inspect"), size="sm", scale=0, elem_id="data-inspect")
            ui.summary = gr.Markdown(elem_id="inspector-summary")
        ui.tokens = gr.HighlightedText(label=labels("ui.data_tokens"), show_legend=True, combine_adjacent=False,
                                       show_inline_category=False,
                                       elem_id="inspector-tokens")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form, trust) -> None:
    """`trust` is the model tab's consent checkbox: the doctor and the inspector load the tokenizer."""
    import pandas as pd

    settings = form.widgets_by_name()
    with_trust = {**settings, TRUST: trust}
    guarded = studio.guarded

    def records_table(records, page: int, lang: str):
        return pd.DataFrame(view.page_rows(records, page, lang), columns=view.table_headers(lang))

    def records_of(values: dict):
        """(config, records) of the settings a handler got, the files checked against the roots first."""
        values.pop(TRUST, None)
        config = studio.checked(form.to_config(values), model=False)
        return config, view.load(config)

    @guarded
    def on_load_click(request: gr.Request, **values):
        trusted = values.get(TRUST) is True
        config, records = records_of(values)
        lang = language_of(request, studio.lang)
        markdown, bars = view.doctor(records, config, studio.renderer(config, trusted), lang)
        frame = pd.DataFrame(bars, columns=[view.LENGTH, view.COUNT, view.FITS])
        # a plain frame: Gradio 6.31 ignores a second update that also sets `sort` (the bins are
        # labelled so that their alphabetical order is their numeric one)
        return records_table(records, 1, lang), 1, f"/ {view.page_count(records)}", markdown, frame

    @guarded
    def on_page_change(page, request: gr.Request, **values):
        page = checked_number(page, msg("ui.data_page"), 1, msg("ui.where_table"))
        _config, records = records_of(values)
        page = min(page, view.page_count(records))
        return records_table(records, page, language_of(request, studio.lang)), page, f"/ {view.page_count(records)}"

    @guarded
    def on_inspect_click(record, request: gr.Request, **values):
        number = checked_number(record, msg("ui.data_record"), 1, msg("ui.where_inspector"))
        trusted = values.get(TRUST) is True
        config, records = records_of(values)
        lang = language_of(request, studio.lang)
        chosen = view.pick(records, number)
        segments, counts = view.token_segments(chosen, studio.renderer(config, trusted), config.cutoff_len, lang)
        return segments, view.inspector_summary(counts, lang)

    def on_page_load(request: gr.Request):
        """The plot's titles and the inspector's legend, in the reader's language."""
        lang = language_of(request, studio.lang)
        # the legend lists every entry of its colour map: the reader's language only
        return (gr.BarPlot(x_title=say("ui.hist_tokens", lang), y_title=say("ui.hist_records", lang),
                           color_title=say("ui.hist_cutoff", lang)),
                gr.HighlightedText(color_map=view.color_map(view.TOKEN_COLORS, (lang,))))

    def on_sample_click():
        return view.sample_path()

    @guarded
    def on_upload_upload(files, request: gr.Request):
        from gradio.utils import get_upload_folder

        kept = keep_uploads(files, studio.workspace.data, Path(get_upload_folder()), studio.max_upload_bytes)
        # the picker is emptied: its files were Gradio's copies, removed now
        return ("\n".join(str(path) for path in kept) if kept else gr.update()), None

    loaded_outputs = [ui.table, ui.page, ui.pages, ui.doctor, ui.histogram]
    inspected = [ui.tokens, ui.summary]
    paged = [ui.table, ui.page, ui.pages]
    private = {"api_visibility": "private"}
    loaded = ui.load.click(on_load_click, None, loaded_outputs, inputs_kwargs=with_trust, api_name="load_dataset")
    loaded.success(on_inspect_click, ui.record, inspected, inputs_kwargs=with_trust, **private)
    ui.inspect.click(on_inspect_click, ui.record, inspected, inputs_kwargs=with_trust, api_name="inspect_record")
    ui.record.submit(on_inspect_click, ui.record, inspected, inputs_kwargs=with_trust, **private)
    ui.page.submit(on_page_change, ui.page, paged, inputs_kwargs=settings, api_name="dataset_page")
    for button, move in ((ui.prev, -1), (ui.next, 1)):
        button.click(lambda p, move=move: max(1, int(p or 1) + move), ui.page, ui.page, **private).success(
            on_page_change, ui.page, paged, inputs_kwargs=settings, **private)
    data_files = form.widgets[Setting.data_files]
    ui.sample.click(on_sample_click, None, data_files, **private).success(
        on_load_click, None, loaded_outputs, inputs_kwargs=with_trust, **private)
    ui.upload.upload(on_upload_upload, ui.upload, [data_files, ui.upload], preprocess=False, show_progress="minimal",
                     api_name="upload_dataset").success(
        on_load_click, None, loaded_outputs, inputs_kwargs=with_trust, **private)
    ui.on_load_click = on_load_click
    ui.on_records_load = on_page_change  # the table alone needs no tokenizer: the page opens with it
    ui.on_inspect_click = on_inspect_click
    ui.on_page_load = on_page_load
    ui.with_trust = with_trust
