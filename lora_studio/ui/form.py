"""Settings widgets generated from RunConfig's field metadata, and the conversions both ways.

Each tab renders the fields of its groups (the model tab the model group, the data tab the data
group, the parameters tab the rest); together they form one `ConfigForm` whose widget keys are the
RunConfig field names. Handlers that need the settings take `form.inputs()` as their inputs and call
`form.to_config(values)`; presets come back to the page through `form.to_values(config)`.
"""

from __future__ import annotations

import dataclasses

from ..config import RunConfig, fields_by_name, from_dict

# Free-text fields that get a multi-line box.
MULTILINE = {"system_prompt": 3, "data_files": 2}


def widget_value(name: str, value):
    """A RunConfig value as its widget shows it."""
    if name == "data_files":
        return "\n".join(value)
    if name == "target_modules":
        return value if isinstance(value, str) else ", ".join(value)
    if name == "gradient_checkpointing":
        return str(value).lower()
    return value


def config_value(name: str, value):
    """A widget's value as RunConfig expects it (validation happens in `from_dict`)."""
    if name == "data_files":
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if name == "gradient_checkpointing":
        return {"true": True, "false": False}.get(str(value).lower(), value)
    if name == "target_modules":
        return str(value or "").strip()
    spec = fields_by_name()[name]
    default = spec.default if spec.default is not dataclasses.MISSING else None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        return int(value) if value == int(value) else value  # gr.Number may hand back 8.0
    return value


class ConfigForm:
    """The settings widgets of the whole studio, keyed by RunConfig field name, in field order."""

    def __init__(self, i18n):
        self.i18n = i18n
        self.widgets: dict = {}

    def render(self, names: list[str], config: RunConfig | None = None):
        """Create widgets for these fields in the current Blocks context; returns them in order."""
        config = config or RunConfig()
        return [self._make(name, getattr(config, name)) for name in names]

    def render_group(self, group: str, config: RunConfig | None = None, skip: tuple = ()):
        names = [n for n, f in fields_by_name().items() if f.metadata["group"] == group and n not in skip]
        return self.render(names, config)

    def _make(self, name: str, value):
        import gradio as gr

        spec = fields_by_name()[name]
        meta = spec.metadata
        common = {"label": self.i18n(f"field.{name}"), "info": self.i18n(f"help.{name}"),
                  "elem_id": f"field-{name}", "value": widget_value(name, value)}
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if name == "target_modules":
            widget = gr.Dropdown(choices=["all-linear", "q_proj, v_proj",
                                          "q_proj, k_proj, v_proj, o_proj",
                                          "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"],
                                 allow_custom_value=True, **common)
        elif name == "model_name_or_path":
            widget = gr.Dropdown(choices=[value], allow_custom_value=True, **common)
        elif meta.get("choices") is not None:
            widget = gr.Dropdown(choices=[widget_value(name, c) for c in meta["choices"]], **common)
        elif isinstance(default, bool):
            widget = gr.Checkbox(**common)
        elif isinstance(default, (int, float)):
            integer = isinstance(default, int)
            widget = gr.Number(minimum=meta.get("min"), maximum=meta.get("max"),
                               precision=0 if integer else None,
                               step=1 if integer else _step(name, meta.get("max")), **common)
        else:
            lines = MULTILINE.get(name, 1)
            widget = gr.Textbox(lines=lines, max_lines=max(lines, 8), **common)
        self.widgets[name] = widget
        return widget

    # --- values ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Field names that have widgets, in RunConfig order (the order of `inputs()`)."""
        return [name for name in fields_by_name() if name in self.widgets]

    def inputs(self) -> list:
        return [self.widgets[name] for name in self.names()]

    def to_config(self, values) -> RunConfig:
        settings = {name: config_value(name, value) for name, value in zip(self.names(), values)}
        return from_dict(settings, where="the studio's settings")

    def to_values(self, config: RunConfig) -> list:
        return [widget_value(name, getattr(config, name)) for name in self.names()]


def _step(name: str, maximum) -> float:
    """Arrow-key increment of a float widget (typing any value within bounds still works)."""
    if name == "learning_rate":
        return 1e-5
    return 0.01 if maximum is not None and maximum <= 1 else 0.1


def values_for(config: RunConfig) -> list:
    """Widget values of every RunConfig field in order: what an API client passes to /start_training."""
    return [widget_value(name, getattr(config, name)) for name in fields_by_name()]
