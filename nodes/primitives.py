"""Primitive value nodes (pure Python): constants, simple text and PreviewAny, as in ComfyUI's utils."""
from __future__ import annotations

import json

from nodegraph import Boolean, Float, Input, Int, Node, NodeOutput, Output, String


class PrimitiveInt(Node):
    """A constant integer, to feed several widgets from one place."""
    display_name = "Int"
    category = "utils/primitive"
    inputs = (Int("value", 0, min=-(2**63), max=2**64 - 1, control_after_generate=True),)
    outputs = (Output("INT"),)

    def run(self, value):
        return (value,)


class PrimitiveFloat(Node):
    display_name = "Float"
    category = "utils/primitive"
    inputs = (Float("value", 0.0, min=-1e18, max=1e18),)
    outputs = (Output("FLOAT"),)

    def run(self, value):
        return (value,)


class PrimitiveString(Node):
    display_name = "String"
    category = "utils/primitive"
    inputs = (String("value", ""),)
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveStringMultiline(Node):
    display_name = "String (Multiline)"
    category = "utils/primitive"
    inputs = (String("value", "", multiline=True),)
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveBoolean(Node):
    display_name = "Boolean"
    category = "utils/primitive"
    inputs = (Boolean("value", False),)
    outputs = (Output("BOOLEAN"),)

    def run(self, value):
        return (value,)


class StringConcatenate(Node):
    display_name = "Concatenate"
    category = "utils/string"
    inputs = (String("string_a", "", multiline=True), String("string_b", "", multiline=True),
              String("delimiter", ""))
    outputs = (Output("STRING"),)

    def run(self, string_a, string_b, delimiter):
        return (delimiter.join((string_a, string_b)),)


def preview_text(value) -> str:
    """What PreviewAny shows: text as is, numbers and booleans with str(), anything else as JSON
    when it can be, else its str()."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - a custom object whose __str__ fails
            return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Shows any value as text on the node."""
    display_name = "Preview Any"
    category = "utils"
    output_node = True
    inputs = (Input("source", "*"),)

    def run(self, source=None):
        return NodeOutput(ui={"text": (preview_text(source),)})


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (PrimitiveInt, PrimitiveFloat, PrimitiveString,
                                                      PrimitiveStringMultiline, PrimitiveBoolean, StringConcatenate,
                                                      PreviewAny)}
