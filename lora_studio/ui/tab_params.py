"""参数 LoRA & training tab: the generated settings widgets, presets, YAML / CLI views and the pre-flight.

Every widget here comes from RunConfig's metadata (see form.py); presets, the equivalent command and
the pre-flight estimate come from the library (presets.py, estimate.py). The YAML and the command
line are regenerated on every change, so what the page shows is always what a run would use: a
value the settings check refuses replaces the YAML with the message (naming the field by its label),
never leaving the last valid YAML in view.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..config import GROUPS, RunConfig, dump_yaml, fields_in_group, load_yaml
from ..errors import StudioError
from ..presets import DEFAULT_PRESET, preset_files, save_preset, train_command
from .i18n import language_of, say
from .paths import preset_file
from .state import Studio, user_message

OWN_TABS = ("model", "data")  # groups with a tab of their own; this tab shows the others
OPEN_GROUPS = ("lora", "training")


def build(studio: Studio, form, labels, config: RunConfig) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        names = list(preset_files(studio.workspace))
        # any name reaches the handler, which says which presets there are (Gradio would, in English)
        ui.preset = gr.Dropdown(names, value=DEFAULT_PRESET if DEFAULT_PRESET in names else None,
                                allow_custom_value=True, label=labels("ui.params_preset"), scale=3, elem_id="preset")
        ui.load_preset = gr.Button(labels("ui.params_load_preset"), size="sm", scale=1)
        ui.preset_name = gr.Textbox(label=labels("ui.params_preset_name"), scale=3,
                                    placeholder=labels("ui.params_preset_example"))
        ui.save_preset = gr.Button(labels("ui.params_save_preset"), size="sm", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            for group in (g for g in GROUPS if g not in OWN_TABS):
                with gr.Accordion(labels(f"ui.group_{group}"), open=group in OPEN_GROUPS):
                    with gr.Row(equal_height=False):
                        for name in fields_in_group(group):
                            with gr.Column(min_width=220):
                                form.render([name], config)
        with gr.Column(scale=2):
            ui.yaml = gr.Code(language="yaml", label=labels("ui.params_yaml"), interactive=False, max_lines=18,
                              elem_id="settings-yaml")
            ui.cli = gr.Code(language="shell", label=labels("ui.params_cli"), interactive=False, max_lines=12,
                             elem_id="settings-cli")
            ui.estimate = gr.Button(labels("ui.params_run_estimate"), variant="primary", size="sm",
                                    elem_id="preflight-run")
            ui.preflight = gr.Textbox(label=labels("ui.params_estimate"), lines=8, interactive=False,
                                      elem_id="preflight")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    settings = form.widgets_by_name()
    guarded = studio.guarded

    def on_settings_change(preset, request: gr.Request, **values):
        lang = language_of(request, studio.lang)
        try:
            config = form.to_config(values)
        except StudioError as exc:  # half-typed values are normal while editing: say so in place, no toast
            return f"# {user_message(exc, lang)}", f"# {say('ui.yaml_invalid', lang)}"
        return (dump_yaml(config, only_changes=True) or say("ui.yaml_all_defaults", lang),
                train_command(config, preset, studio.workspace, lang))

    @guarded
    def on_load_preset_click(preset, request: gr.Request):
        return form.to_values(load_yaml(preset_file(studio.roots, studio.workspace, str(preset or ""))))

    @guarded
    def on_save_preset_click(name, request: gr.Request, **values):
        path, renamed = save_preset(form.to_config(values), name, studio.workspace)
        lang = language_of(request, studio.lang)
        gr.Info(say("presets.saved", lang, path=str(path))
                + (say("presets.renamed", lang, name=name.strip()) if renamed else ""))
        return gr.update(choices=list(preset_files(studio.workspace)), value=path.stem)

    @guarded
    def on_estimate_click(request: gr.Request, **values):
        from ..estimate import preflight_report

        report = preflight_report(studio.checked(form.to_config(values)), studio.workspace, studio.scan_runs())
        return report.to_text(language_of(request, studio.lang))

    gr.on([w.change for w in settings.values()] + [ui.preset.change], on_settings_change, ui.preset,
          [ui.yaml, ui.cli], inputs_kwargs=settings, show_progress="hidden", api_name="settings_yaml")
    ui.load_preset.click(on_load_preset_click, ui.preset, form.inputs(), api_name="load_preset")
    ui.save_preset.click(on_save_preset_click, ui.preset_name, ui.preset, inputs_kwargs=settings,
                         api_name="save_preset")
    ui.estimate.click(on_estimate_click, None, ui.preflight, inputs_kwargs=settings, api_name="preflight")
    ui.on_settings_change = on_settings_change
