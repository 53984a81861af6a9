"""A UI node's positional `widgets_values` mapped to input names, as ComfyUI's frontend maps them.

The frontend rebuilds a node's widgets from its definition and assigns the saved values by position;
widgets the file has no value for keep their defaults. Files from every frontend generation load:
the control value after a seed (today's `"randomize"`, the 2023 randomize checkbox `true`), the upload
button's value after the required inputs, the dummy values pre-1.16 frontends saved for `forceInput`
inputs, and nodes saved with `widgets_values: null` or too few values.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..contract import InputSpec, NodeSpecs

SEED_CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})  # older frontends added the control by name
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
NO_VALUE = object()  # a widget with no value and no default: the input is left out


def is_control_value(value: Any) -> bool:
    """A value the frontend keeps in the control slot: a mode name, or the 2023 checkbox (a bool)."""
    return isinstance(value, bool) or (isinstance(value, str) and value in SEED_CONTROL_VALUES)


def _flagged_control(spec: InputSpec) -> bool:
    return spec.type == "INT" and bool(spec.options.get("control_after_generate"))


def _legacy_control(spec: InputSpec) -> bool:
    return spec.type == "INT" and not _flagged_control(spec) and spec.name in LEGACY_SEED_NAMES


def widget_default(spec: InputSpec) -> Any:
    """The value a freshly created widget holds (what the frontend sends for a value the file lacks)."""
    default = spec.default
    if default is not None:
        return default
    if spec.type == "COMBO":
        return NO_VALUE  # an empty file list: nothing to choose, validation reports the input missing
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type, NO_VALUE)


class _Slots:
    """The frontend's widget list for one node: widget specs, with the extra value slots it saves."""

    def __init__(self, specs: NodeSpecs):
        self.widgets = [s for s in specs.declared() if s.is_widget]
        self.forced = [s for s in specs.declared() if s.type != "COMBO" and s.options.get("forceInput")]
        self.upload_after = None  # name of the last required widget, after which the upload value sits
        if any(s.options.get(o) for s in self.widgets for o in UPLOAD_OPTIONS):
            required = [s for s in self.widgets if s.section == "required"]
            self.upload_after = required[-1].name if required else None
        flagged = sum(_flagged_control(s) for s in self.widgets)
        self.count = len(self.widgets) + (self.upload_after is not None)
        self.count_with_controls = self.count + flagged
        self.count_with_legacy = self.count_with_controls + sum(_legacy_control(s) for s in self.widgets)


def widget_inputs(specs: NodeSpecs, values: Any) -> dict[str, Any]:
    """Input name -> value for a node's widgets. `values` is the node's `widgets_values`: a list,
    None (no values saved: every widget takes its default) or a dict by name (some custom nodes)."""
    slots = _Slots(specs)
    if isinstance(values, dict):
        return {s.name: values[s.name] for s in slots.widgets if s.name in values}
    values = _without_force_input_dummies(specs, slots, list(values or []))
    inputs: dict[str, Any] = {}
    position = 0
    for spec in slots.widgets:
        if position < len(values):
            inputs[spec.name] = values[position]
            position += 1
            if position < len(values) and _has_control_slot(spec, values, position, slots):
                position += 1  # the frontend-only "control after generate" value
            if spec.name == slots.upload_after:
                position += 1  # the upload button's value ("image")
        else:
            default = widget_default(spec)
            if default is not NO_VALUE:
                inputs[spec.name] = default
    return inputs


def _has_control_slot(spec: InputSpec, values: Sequence[Any], position: int, slots: _Slots) -> bool:
    """Whether values[position] sits in the control widget after `spec`. A control value always
    does; anything else does when the file holds as many values as widgets plus controls (the
    frontend assigns by position, whatever the value), and not when it holds fewer (a file saved
    without control values)."""
    if _flagged_control(spec):
        return is_control_value(values[position]) or len(values) >= slots.count_with_controls
    if _legacy_control(spec):
        return is_control_value(values[position]) or len(values) >= slots.count_with_legacy
    return False


def _without_force_input_dummies(specs: NodeSpecs, slots: _Slots, values: list[Any]) -> list[Any]:
    """Frontends before 1.16 saved a value for every `forceInput` input too (it was a widget turned
    into a socket). When the count says so, drop those values, as the frontend's migration does."""
    if not slots.forced:
        return values
    layout: list[bool] = []  # per saved slot: whether it belongs to a forceInput input
    for spec in specs.declared():
        forced = spec in slots.forced
        if spec.is_widget or forced:
            layout.append(forced)
            if _flagged_control(spec):
                layout.append(False)
    if len(layout) != len(values):
        return values
    return [v for v, forced in zip(values, layout) if not forced]
