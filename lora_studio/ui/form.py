"""Settings widgets generated from a settings dataclass's field metadata (RunConfig, SamplingConfig).

The metadata says everything a widget needs: choices become a dropdown, `suggestions` (or
`widget: dropdown`) one that takes any typed value, `widget: slider` a slider, other numbers a
number box with the field's `step`, booleans a checkbox, `lines` a multi-line box; values go through
`settings.widget_text` / `from_widget_text` both ways. Nothing here names a setting.

Values reach the handler as they were sent, and the settings check (`settings.check_value`) judges
them: it knows each field's bounds and type, and here it names the field by its label in the reader's
language and adds the allowed range. Gradio's own checks are left out: they would say "Value -1 is
less than minimum value 1e-08" or "Value: x is not in the list of choices" in English, or round
r=2.5 to 2. So a number box has no bounds and no precision, a dropdown of choices takes a typed
value (the check then lists the choices), and a slider, which needs its bounds to be drawn, is read
by a handler wired with preprocess=False (the chat's: the only one with sliders).
(Subclassing Gradio's components instead would make Gradio write a .pyi file beside this module.)

Each tab renders the fields of its groups; together they form one `SettingsForm` whose widget keys
are the field names. Handlers take the settings by name, wired with
`inputs_kwargs=form.widgets_by_name()`, so the API's parameters are the fields' names
(`learning_rate=...`), and call `form.to_config(settings)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import gradio as gr

from ..config import RunConfig, from_dict
from ..errors import ConfigError
from ..i18n import Msg, msg, text
from ..settings import check_value, default_of, fields_of, from_widget_text, widget_text


class FieldName(Msg):
    """A setting as a message names it: its label in the reader's language, and its key when they differ.

    Rendered when shown (the reader's language is known then); a form's error is shown at once, never
    written to an events file, where it would come back as a plain Msg.
    """

    def __init__(self, name: str):
        super().__init__("ui.field_name", {"name": name})

    def render(self, lang: str) -> str:
        name = self.params["name"]
        label = text(f"field.{name}", lang)
        return name if label == name else text(self.key, lang, label=label, name=name)


def allowed(spec: dataclasses.Field) -> Msg | None:
    """What a number or switch may be, said the way a person reads it: 'a whole number from 1 to 1024'."""
    meta, default = spec.metadata, default_of(spec)
    if meta.get("choices") is not None or meta.get("kind") is not None:
        return None  # the settings check lists the choices, or says how to write paths and modules
    if isinstance(default, bool):
        return msg("ui.allowed_switch")
    if not isinstance(default, (int, float)):
        return None
    kind = msg("ui.kind_whole" if isinstance(default, int) else "ui.kind_number")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return msg("ui.allowed_between", kind=kind, min=lo, max=hi)
    if lo is not None:
        return msg("ui.allowed_at_least", kind=kind, min=lo)
    if hi is not None:
        return msg("ui.allowed_at_most", kind=kind, max=hi)
    return msg("ui.allowed_any", kind=kind)


def checked_value(spec: dataclasses.Field, value: Any, where: Msg, label: Msg | None = None) -> Any:
    """A widget's value checked as its field's: a ConfigError names the field's label and what it may be."""
    try:
        return check_value(label or FieldName(spec.name), from_widget_text(spec, value), spec, where)
    except ConfigError as exc:
        # the range is in the message already when it was out of it; an example in the library's
        # fix is something to type, so it keeps the key
        fix = None if exc.what.key == "config.out_of_range" else allowed(spec)
        raise ConfigError(exc.what, where, fix or _keys_only(exc.fix)) from None


def _keys_only(value):
    """A message with each field's label turned back into its key (for an example to type)."""
    if isinstance(value, FieldName):
        return value.params["name"]
    if isinstance(value, Msg):
        return type(value)(value.key, {key: _keys_only(param) for key, param in value.params.items()})
    return value


def checked_number(value: Any, label: Msg, lo: int, where: Msg) -> int:
    """A whole number typed into a box that is no setting (a record, a page), checked as a setting would be."""
    return checked_value(dataclasses.field(default=lo, metadata={"min": lo}), value, where, label)


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
    meta, default = spec.metadata, default_of(spec)
    shown = widget_text(spec, value)
    common = {"label": labels(f"field.{spec.name}"), "info": labels(f"help.{spec.name}"), "elem_id": elem_id,
              "value": shown}
    if meta.get("suggestions") is not None or meta.get("widget") == "dropdown":
        choices = list(meta.get("suggestions") or ())
        return gr.Dropdown(choices=choices if shown in choices else [shown, *choices], allow_custom_value=True,
                           **common)
    if meta.get("choices") is not None:
        return gr.Dropdown(choices=[widget_text(spec, choice) for choice in meta["choices"]], allow_custom_value=True,
                           **common)
    if isinstance(default, bool):
        return gr.Checkbox(**common)
    if isinstance(default, (int, float)):
        if meta.get("widget") == "slider":
            return gr.Slider(minimum=meta.get("min"), maximum=meta.get("max"), step=step_of(spec), **common)
        # no bounds and no precision: Gradio would refuse in English or round 2.5 to 2 (see above)
        return gr.Number(step=step_of(spec), **common)
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

    def checked(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings a handler got by name, each checked as its field's (others are left out)."""
        where = msg("ui.where_settings")
        return {name: checked_value(self.specs[name], value, where) for name, value in settings.items()
                if name in self.specs}

    def to_config(self, settings: Mapping[str, Any]):
        """The settings a handler got by name, checked: a RunConfig (or SamplingConfig)."""
        return self.build(self.checked(settings), where=msg("ui.where_settings"))

    def to_values(self, config) -> list:
        """Widget values for `inputs()`, in their order (what a handler returns to fill the form)."""
        return [widget_text(self.specs[name], getattr(config, name)) for name in self.names()]


def widget_values(config) -> dict[str, Any]:
    """{field name: widget value} of every field: what an API client passes to /start_training."""
    return {name: widget_text(spec, getattr(config, name)) for name, spec in fields_of(type(config)).items()}
