"""Settings widgets generated from a settings dataclass's field metadata (RunConfig, SamplingConfig).

The metadata says everything a widget needs: choices become a dropdown, `suggestions` (or
`widget: dropdown`) one that takes any typed value, `widget: slider` a slider, other numbers a
number box with the field's bounds and `step`, booleans a checkbox, `lines` a multi-line box; values
go through `settings.widget_text` / `from_widget_text` both ways. Nothing here names a setting.

Each tab renders the fields of its groups; together they form one `SettingsForm` whose widget keys
are the field names. Handlers take the settings by name, wired with
`inputs_kwargs=form.widgets_by_name()`, so the API's parameters are the fields' names
(`learning_rate=...`), and call `form.to_config(settings)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ..config import RunConfig, from_dict
from ..i18n import msg
from ..settings import default_of, fields_of, from_widget_text, widget_text


def is_compact(spec: dataclasses.Field) -> bool:
    """A number or an on/off switch: a narrow widget (the data tab puts these in a side column)."""
    return isinstance(default_of(spec), (bool, int, float)) and spec.metadata.get("choices") is None


def step_of(spec: dataclasses.Field) -> float:
    """Arrow-key increment of a number widget (typing any value within bounds still works)."""
    meta, default = spec.metadata, default_of(spec)
    if meta.get("step") is not None:
        return meta["step"]
    if isinstance(default, int):
        return 1
    maximum = meta.get("max")
    return 0.01 if maximum is not None and maximum <= 1 else 0.1


def make_widget(spec: dataclasses.Field, value: Any, labels, elem_id: str):
    """One field's widget in the current Blocks context."""
    import gradio as gr

    meta, default = spec.metadata, default_of(spec)
    shown = widget_text(spec, value)
    common = {"label": labels(f"field.{spec.name}"), "info": labels(f"help.{spec.name}"), "elem_id": elem_id,
              "value": shown}
    if meta.get("suggestions") is not None or meta.get("widget") == "dropdown":
        choices = list(meta.get("suggestions") or ())
        return gr.Dropdown(choices=choices if shown in choices else [shown, *choices], allow_custom_value=True,
                           **common)
    if meta.get("choices") is not None:
        return gr.Dropdown(choices=[widget_text(spec, choice) for choice in meta["choices"]], **common)
    if isinstance(default, bool):
        return gr.Checkbox(**common)
    if isinstance(default, (int, float)):
        bounds = {"minimum": meta.get("min"), "maximum": meta.get("max"), "step": step_of(spec)}
        if meta.get("widget") == "slider":
            return gr.Slider(**bounds, **common)
        return gr.Number(precision=0 if isinstance(default, int) else None, **bounds, **common)
    lines = meta.get("lines", 1)
    return gr.Textbox(lines=lines, max_lines=max(lines, 8), **common)


class SettingsForm:
    """The widgets of one settings dataclass, keyed by field name, in field order."""

    def __init__(self, labels, cls=RunConfig, build: Callable = from_dict, prefix: str = "field"):
        self.labels, self.cls, self.build, self.prefix = labels, cls, build, prefix
        self.specs = fields_of(cls)
        self.widgets: dict = {}

    def render(self, names, values=None) -> list:
        """Create widgets for these fields in the current Blocks context; returns them in order."""
        values = values if values is not None else self.cls()
        return [self._make(name, getattr(values, name)) for name in names]

    def render_group(self, group: str, values=None) -> list:
        """The widgets of every field in `group` (RunConfig's: `config.fields_in_group`)."""
        return self.render([name for name, spec in self.specs.items() if spec.metadata["group"] == group], values)

    def _make(self, name: str, value):
        widget = make_widget(self.specs[name], value, self.labels, f"{self.prefix}-{name}")
        self.widgets[name] = widget
        return widget

    # --- values ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Field names that have widgets, in field order (the order of `inputs()`)."""
        return [name for name in self.specs if name in self.widgets]

    def inputs(self) -> list:
        return [self.widgets[name] for name in self.names()]

    def widgets_by_name(self) -> dict:
        """{field name: widget}: what a handler taking **settings is wired with (inputs_kwargs)."""
        return {name: self.widgets[name] for name in self.names()}

    def to_config(self, settings: Mapping[str, Any]):
        """The settings a handler got by name, checked: a RunConfig (or SamplingConfig)."""
        values = {name: from_widget_text(self.specs[name], value) for name, value in settings.items()
                  if name in self.specs}
        return self.build(values, where=msg("ui.where_settings"))

    def to_values(self, config) -> list:
        """Widget values for `inputs()`, in their order (what a handler returns to fill the form)."""
        return [widget_text(self.specs[name], getattr(config, name)) for name in self.names()]


def widget_values(config) -> dict[str, Any]:
    """{field name: widget value} of every field: what an API client passes to /start_training."""
    return {name: widget_text(spec, getattr(config, name)) for name, spec in fields_of(type(config)).items()}
