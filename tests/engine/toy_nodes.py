"""Small pure-Python nodes that exercise the engine (no torch), with execution counters."""
from __future__ import annotations

import collections
import time
from pathlib import Path

from nodegraph import Combo, Float, Input, Int, Node, NodeOutput, Output, ProgressBar, String, check_cancelled

CALLS: collections.Counter = collections.Counter()


class Number(Node):
    """A constant number."""
    category = "math"
    inputs = (Float("value", 0.0, min=-1e9, max=1e9),)
    outputs = (Output("FLOAT", "value"),)

    def run(self, value):
        CALLS["Number"] += 1
        return (value,)


class Add(Node):
    category = "math"
    inputs = (Input("a", "FLOAT", forceInput=True), Input("b", "FLOAT", forceInput=True))
    outputs = (Output("FLOAT"),)

    def run(self, a, b):
        CALLS["Add"] += 1
        return (a + b,)


class Multiply(Node):
    category = "math"
    inputs = (Input("a", "FLOAT", forceInput=True), Float("factor", 1.0, min=-100, max=100, step=0.1))
    outputs = (Output("FLOAT"),)

    def run(self, a, factor):
        CALLS["Multiply"] += 1
        return (a * factor,)


class Seeded(Node):
    """A node with a seed widget (control_after_generate), steps and a mode combo."""
    category = "math"
    inputs = (Input("a", "FLOAT", forceInput=True), Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
              Int("steps", 20, min=1, max=10000), Combo("mode", ["sum", "product"]))
    outputs = (Output("FLOAT"),)

    def run(self, a, seed, steps, mode):
        CALLS["Seeded"] += 1
        return (a + seed + steps if mode == "sum" else a * seed * steps,)


class Format(Node):
    category = "text"
    inputs = (Input("value", "FLOAT", forceInput=True), String("template", "{}", multiline=True))
    outputs = (Output("STRING"),)

    def run(self, value, template):
        CALLS["Format"] += 1
        return (template.format(value),)


class Show(Node):
    """An output node: shows a value in the UI."""
    category = "text"
    output_node = True
    inputs = (Input("value", "FLOAT,STRING"),)

    def run(self, value):
        CALLS["Show"] += 1
        return NodeOutput(ui={"text": [str(value)]})


class Slow(Node):
    """Counts to `steps`, reporting progress and honouring cancellation."""
    category = "test"
    inputs = (Input("a", "FLOAT", forceInput=True), Int("steps", 5, min=1, max=1000), Float("delay", 0.0, min=0, max=10))
    outputs = (Output("FLOAT"),)

    def run(self, a, steps, delay):
        CALLS["Slow"] += 1
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(delay)
            check_cancelled()
            bar.update(1)
        return (a,)


class Fail(Node):
    category = "test"
    inputs = (Input("a", "FLOAT", forceInput=True), String("message", "boom"))
    outputs = (Output("FLOAT"),)

    def run(self, a, message):
        CALLS["Fail"] += 1
        raise RuntimeError(message)


class ReadNumberFile(Node):
    """Reads a number from a file; the fingerprint is the file's contents, so edits re-run it."""
    category = "io"
    inputs = (String("path", ""),)
    outputs = (Output("FLOAT"),)

    @classmethod
    def fingerprint(cls, path):
        return Path(path).read_text() if Path(path).exists() else float("nan")

    @classmethod
    def validate(cls, path):
        return True if path else "path must not be empty"

    def run(self, path):
        CALLS["ReadNumberFile"] += 1
        return (float(Path(path).read_text()),)


class V1Scale:
    """A node in ComfyUI's v1 class contract, registered unchanged."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("FLOAT", {"forceInput": True}), "scale": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0}),
                             "rounding": (["none", "floor"],)},
                "optional": {"offset": ("FLOAT", {"default": 0.0})},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}}

    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("scaled",)
    FUNCTION = "scale_it"
    CATEGORY = "v1"
    DESCRIPTION = "Scales a number."

    @classmethod
    def VALIDATE_INPUTS(cls, scale):
        return True if scale != 3.0 else "3.0 is unlucky"

    @classmethod
    def IS_CHANGED(cls, scale, **kwargs):
        return scale

    def scale_it(self, a, scale, rounding, offset=0.0, unique_id=None, prompt=None):
        CALLS["V1Scale"] += 1
        assert unique_id is not None and prompt is not None
        value = a * scale + offset
        return (float(int(value)) if rounding == "floor" else value,)


ALL = [Number, Add, Multiply, Seeded, Format, Show, Slow, Fail, ReadNumberFile]


def make_registry():
    from nodegraph import NodeRegistry
    registry = NodeRegistry()
    registry.register_all(ALL)
    registry.register(V1Scale, "V1Scale", display_name="Scale (v1)")
    return registry
