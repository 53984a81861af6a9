"""Test-only nodes for the server: an output node that writes a PNG (with PIL, no torch) into the
output folder and reports it the way ComfyUI's Save Image does."""
from __future__ import annotations

import itertools

from nodegraph import Input, Int, Node, NodeOutput, Output, ProgressBar, String, folders
from tests.engine import toy_nodes

_counter = itertools.count(1)


class SavePNG(Node):
    """Writes a small gradient PNG whose colour depends on `value`."""
    category = "test"
    output_node = True
    inputs = (Input("value", "FLOAT", forceInput=True), Int("size", 16, min=1, max=512),
              String("filename_prefix", "test"))

    def run(self, value, size, filename_prefix):
        from PIL import Image
        out = folders.current().output
        out.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}_{next(_counter):05}_.png"
        shade = int(abs(value) * 37) % 256
        image = Image.new("RGB", (size, size), (shade, 255 - shade, 128))
        image.save(out / name)
        return NodeOutput(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class PreviewSteps(Node):
    """Reports `steps` progress steps, each with a small preview image (like a sampler)."""
    category = "test"
    inputs = (Input("a", "FLOAT", forceInput=True), Int("steps", 3, min=1, max=100))
    outputs = (Output("FLOAT"),)

    def run(self, a, steps):
        from PIL import Image
        bar = ProgressBar(steps)
        for i in range(steps):
            bar.update_absolute(i + 1, steps, Image.new("RGB", (8, 8), (i * 40 % 256, 0, 0)))
        return (a,)


def make_registry():
    registry = toy_nodes.make_registry()
    registry.register_all([SavePNG, PreviewSteps])
    return registry


def number_prompt(value: float = 1.0, factor: float = 2.0) -> dict:
    """Number -> Multiply -> Show: three nodes, one output."""
    return {"1": {"class_type": "Number", "inputs": {"value": value}, "_meta": {"title": "Number"}},
            "2": {"class_type": "Multiply", "inputs": {"a": ["1", 0], "factor": factor}, "_meta": {"title": "Multiply"}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}, "_meta": {"title": "Show"}}}


def slow_prompt(value: float = 1.0, steps: int = 50, delay: float = 0.05) -> dict:
    """Number -> Slow (progress each step, cancellable) -> Show."""
    return {"1": {"class_type": "Number", "inputs": {"value": value}, "_meta": {"title": "Number"}},
            "2": {"class_type": "Slow", "inputs": {"a": ["1", 0], "steps": steps, "delay": delay}, "_meta": {"title": "Slow"}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}, "_meta": {"title": "Show"}}}


def png_prompt(value: float = 1.0, size: int = 16) -> dict:
    """Number -> SavePNG."""
    return {"1": {"class_type": "Number", "inputs": {"value": value}, "_meta": {"title": "Number"}},
            "2": {"class_type": "SavePNG", "inputs": {"value": ["1", 0], "size": size, "filename_prefix": "test"},
                  "_meta": {"title": "Save"}}}


def preview_prompt(value: float = 1.0, steps: int = 3) -> dict:
    return {"1": {"class_type": "Number", "inputs": {"value": value}},
            "2": {"class_type": "PreviewSteps", "inputs": {"a": ["1", 0], "steps": steps}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
