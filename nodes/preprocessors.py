"""ControlNet hint preprocessors: Canny edges (ComfyUI's node) and monocular depth (transformers).

The computing is in `nodes.preprocess` (pure functions on IMAGE tensors); these classes only declare
the nodes, check their inputs and report what a person should know (no edges found, a flat map).
See docs/preprocessors.md.
"""
from __future__ import annotations

import logging

from nodegraph import Combo, Float, Input, Int, Node, Output
from nodegraph import folders
from nodegraph.progress import current_node

from .preprocess.canny import canny_edges, threshold_problem
from .preprocess.depth import (DepthModelError, check_depth_model_folder, describe, estimate_depth,
                               find_depth_model, folder_identity, load_depth_model)

log = logging.getLogger(__name__)


def _who(node_class: str) -> str:
    """'Canny (node 7)' inside a run, 'Canny' outside one: warnings name the node."""
    context = current_node()
    return f"{node_class} (node {context.node_id})" if context is not None else node_class


def _images(indices: list[int], total: int) -> str:
    if total == 1:
        return "the image"
    return "image" + ("s " if len(indices) > 1 else " ") + ", ".join(str(i + 1) for i in indices) + f" of {total}"


class Canny(Node):
    """Canny edge detection for ControlNet canny hints: kornia's Canny, as ComfyUI's node runs it.
    Thresholds are on kornia's 0..1 gradient scale: gradients above high_threshold start an edge,
    gradients above low_threshold extend it. Returns the edge map (0 or 1) on three channels, same
    size and batch as the input."""

    category = "image/preprocessors"
    inputs = (
        Input("image", "IMAGE"),
        Float("low_threshold", 0.4, min=0.01, max=0.99, step=0.01),
        Float("high_threshold", 0.8, min=0.01, max=0.99, step=0.01),
    )
    outputs = (Output("IMAGE"),)

    @classmethod
    def validate(cls, low_threshold=None, high_threshold=None):
        # Taking these inputs turns off the engine's own min/max check for them: threshold_problem
        # checks the range as well as the order. Linked (not yet known) values are checked in run.
        if low_threshold is None or high_threshold is None:
            for name, value in (("low_threshold", low_threshold), ("high_threshold", high_threshold)):
                if value is not None and threshold_problem(value, value):
                    return threshold_problem(value, value)
            return True
        return threshold_problem(low_threshold, high_threshold) or True

    def run(self, image, low_threshold, high_threshold):
        problem = threshold_problem(low_threshold, high_threshold)
        if problem:
            raise ValueError(f"Canny: {problem}")
        edges = canny_edges(image, low_threshold, high_threshold)
        if edges.numel() == 0:
            log.warning("%s: empty image (shape %s); no edges found", _who("Canny"), tuple(image.shape))
            return (edges,)
        empty = [i for i in range(edges.shape[0]) if not bool(edges[i].any())]
        if empty:
            log.warning("%s: no edges found in %s (low_threshold %s, high_threshold %s); the image is flat or "
                        "black, or the thresholds are too high. The ControlNet gets an empty hint.",
                        _who("Canny"), _images(empty, edges.shape[0]), low_threshold, high_threshold)
        return (edges,)


def _depth_model_names():
    return folders.current().list_model_dirs("depth")


class DepthEstimation(Node):
    """Monocular depth map for ControlNet depth hints, with a transformers depth model (DPT,
    MiDaS / DPT-hybrid, Depth Anything) from a folder under models/depth/. Near is bright: each map
    is normalised to 0..1 per image and returned on three channels at the input's size.
    resolution is the size the model works at; 0 uses the model's own (384 for DPT / MiDaS,
    518 for Depth Anything)."""

    display_name = "Depth Map (transformers)"
    category = "image/preprocessors"
    inputs = (
        Input("image", "IMAGE"),
        Combo("model", _depth_model_names,
              tooltip="a transformers depth model folder in models/depth/ (config.json, model.safetensors, "
                      "preprocessor_config.json)"),
        Int("resolution", 0, min=0, max=4096, step=1,
            tooltip="processing size; 0 = the model's own (384 DPT/MiDaS, 518 Depth Anything)"),
    )
    outputs = (Output("IMAGE"),)

    @classmethod
    def validate(cls, model=None):
        # Replaces the engine's "value not in list" for `model` with a message that says what to do.
        if model is None:
            return True
        try:
            check_depth_model_folder(find_depth_model(model))
        except DepthModelError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint(cls, model=None, **_):
        # Re-run when the model's files change on disk.
        if model is None:
            return ""
        try:
            return repr(folder_identity(find_depth_model(model)))
        except DepthModelError:
            return "missing"

    def run(self, image, model, resolution=0):
        who = _who("DepthEstimation")
        try:
            bundle = load_depth_model(find_depth_model(model))
        except DepthModelError as exc:
            raise type(exc)(f"{who}: {exc}", exc.folder) from exc
        depth = estimate_depth(bundle, image, resolution or None)
        if depth.numel() == 0:
            log.warning("%s: empty image (shape %s); returning it unchanged", who, tuple(image.shape))
            return (depth,)
        flat = [i for i in range(depth.shape[0]) if not bool(depth[i].any())]
        if flat:
            log.warning("%s: %s gave a flat depth map (no depth variation: a black or single-colour image?); "
                        "model %s", who, _images(flat, depth.shape[0]), describe(bundle))
        return (depth,)


NODE_CLASS_MAPPINGS = {"Canny": Canny, "DepthEstimation": DepthEstimation}
NODE_DISPLAY_NAME_MAPPINGS = {"Canny": "Canny", "DepthEstimation": "Depth Map (transformers)"}
