"""参数 LoRA & training tab: the generated settings widgets, presets, YAML / CLI views and the pre-flight.

Every widget here comes from RunConfig's metadata (see form.py). The YAML and the command line are
regenerated on every change, so what the page shows is always what a run would use.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import yaml

from ..config import RunConfig, dump_yaml, fields_by_name, from_dict, load_yaml, save_yaml
from ..errors import ConfigError, StudioError
from ..runs import sanitize_run_name
from .state import Studio, guarded, user_message

BUILTIN_PRESETS = Path(__file__).resolve().parents[2] / "presets"
GROUPS = ("template", "lora", "training", "output")


def preset_files(workspace: Path) -> dict[str, Path]:
    """Preset name -> file: the bundled ones, then the user's in workspace/presets (which win)."""
    found = {}
    for folder in (BUILTIN_PRESETS, workspace / "presets"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return found


def preset_config(name: str, workspace: Path) -> RunConfig:
    files = preset_files(workspace)
    if name not in files:
        raise ConfigError(f"no preset called '{name}'", "presets",
                          f"Pick one of: {', '.join(files) or 'none yet'}.")
    return load_yaml(files[name])


def cli_command(config: RunConfig, preset: str | None, workspace: Path) -> str:
    """`python studio.py train PRESET --set ...`: the preset's file plus what differs from it."""
    files = preset_files(workspace)
    base = load_yaml(files[preset]) if preset in files else RunConfig()
    where = _display_path(files[preset]) if preset in files else "settings.yaml"
    sets = []
    for key, value in config.to_dict().items():
        if getattr(base, key) != value:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            if text.endswith("\n...") or text.endswith("..."):
                text = text.rsplit("\n", 1)[0]
            sets.append(f"--set {shlex.quote(f'{key}={text}')}")
    command = " \\\n    ".join([f"python studio.py train {shlex.quote(where)}", *sets])
    if preset not in files:
        command = "# settings.yaml holds the YAML above\n" + command
    return command


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def preflight_text(config: RunConfig) -> str:
    from ..estimate import model_config_for, preflight
    from ..runs import measured_pace
    from ..trainer_setup import select_records

    model_config, where = model_config_for(config)
    train, _val, _total, _removed = select_records(config)
    report = preflight(config, model_config, len(train))
    report.model = where
    text = report.to_text()
    timed = measured_pace(config)
    if timed and report.total_steps:
        pace, run = timed
        eta = _minutes(pace * report.total_steps)
        text += (f"\nETA: about {eta} at the pace of run {run} ({pace:.2f} s/step on this machine)"
                 f" · 按运行 {run} 的速度预计约 {eta}")
    else:
        text += ("\nETA: shown once a run with this model, batch size and cutoff has timed a few steps"
                 " · 用相同模型、批大小和截断长度训练几步后给出预计时间")
    return text


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def build(studio: Studio, form, i18n, config: RunConfig) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Row():
        names = list(preset_files(studio.workspace))
        ui.preset = gr.Dropdown(names, value="demo-tiny" if "demo-tiny" in names else None,
                                label=i18n("params.preset"), scale=3, elem_id="preset")
        ui.load_preset = gr.Button(i18n("params.load_preset"), size="sm", scale=1)
        ui.preset_name = gr.Textbox(label=i18n("params.preset_name"), scale=3, placeholder="my-preset")
        ui.save_preset = gr.Button(i18n("params.save_preset"), size="sm", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            for group in GROUPS:
                with gr.Accordion(i18n(f"group.{group}"), open=group in ("lora", "training")):
                    with gr.Row(equal_height=False):
                        for widget_name in _group_fields(group):
                            with gr.Column(min_width=220):
                                form.render([widget_name], config)
        with gr.Column(scale=2):
            ui.yaml = gr.Code(language="yaml", label=i18n("params.yaml"), interactive=False, max_lines=18,
                              elem_id="settings-yaml")
            ui.cli = gr.Code(language="shell", label=i18n("params.cli"), interactive=False, max_lines=12,
                             elem_id="settings-cli")
            ui.estimate = gr.Button(i18n("params.run_estimate"), variant="primary", size="sm")
            ui.preflight = gr.Textbox(label=i18n("params.estimate"), lines=8, interactive=False,
                                      elem_id="preflight")
    return ui


def _group_fields(group: str) -> list[str]:
    return [name for name, f in fields_by_name().items() if f.metadata["group"] == group]


def wire(studio: Studio, ui: SimpleNamespace, form) -> None:
    settings = form.inputs()

    def on_settings_change(preset, *values):
        try:
            config = form.to_config(values)
        except StudioError as exc:  # half-typed values are normal while editing: say so in place
            return f"# {user_message(exc)}", ""
        return dump_yaml(config, only_changes=True) or "{}  # all defaults\n", \
            cli_command(config, preset, studio.workspace)

    @guarded
    def on_load_preset_click(preset):
        return form.to_values(preset_config(preset, studio.workspace))

    @guarded
    def on_save_preset_click(name, *values):
        config = form.to_config(values)
        clean = sanitize_run_name(name or "")
        if not (name or "").strip():
            raise ConfigError("the preset needs a name", "preset name", "Type a name, e.g. my-huanhuan.")
        taken, chosen, number = preset_files(studio.workspace), clean, 1
        while chosen in taken:  # never over a bundled preset or one the user saved before
            number += 1
            chosen = f"{clean}-{number}"
        path = save_yaml(config, studio.workspace / "presets" / f"{chosen}.yaml", only_changes=True)
        gr.Info(f"Saved {path}" + (f" ('{clean}' already exists and was kept)" if chosen != clean else ""))
        return gr.update(choices=list(preset_files(studio.workspace)), value=chosen)

    @guarded
    def on_estimate_click(*values):
        return preflight_text(form.to_config(values))

    gr.on([w.change for w in settings] + [ui.preset.change], on_settings_change, [ui.preset, *settings],
          [ui.yaml, ui.cli], show_progress="hidden", api_name="settings_yaml")
    ui.load_preset.click(on_load_preset_click, ui.preset, settings, api_name="load_preset")
    ui.save_preset.click(on_save_preset_click, [ui.preset_name, *settings], ui.preset, api_name="save_preset")
    ui.estimate.click(on_estimate_click, settings, ui.preflight, api_name="preflight")
    ui.on_settings_change = on_settings_change


def config_from_preset(name: str, workspace: Path) -> RunConfig:
    """The studio's starting settings: a preset if it exists, else the defaults."""
    try:
        return preset_config(name, workspace)
    except ConfigError:
        return from_dict({})
