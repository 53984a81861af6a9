"""Primitive value nodes (pure Python): constants and simple text, as in ComfyUI's utils."""
from __future__ import annotations

from nodegraph import Boolean, Float, Int, Node, Output, String


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


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (PrimitiveInt, PrimitiveFloat, PrimitiveString,
                                                      PrimitiveStringMultiline, PrimitiveBoolean, StringConcatenate)}
