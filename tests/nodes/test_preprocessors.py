"""Preprocessor nodes: Canny (kornia's, as ComfyUI's node) and DepthEstimation (transformers).

Canny positions are derived by hand: a square whose border pixels are half-grey has its blurred
step centred on those pixels, so the gradient magnitude peaks exactly on them. Depth uses tiny
randomly initialised DPT and Depth Anything models written with save_pretrained, loaded offline.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from nodegraph import Executor, Input, Node, NodeRegistry, Output, OutputCache, String, folders, validate_prompt
from nodegraph.errors import ValidationError
from nodes.preprocess import depth as depth_mod
from nodes.preprocess.canny import canny_edges
from nodes.preprocess.depth import (DepthModel, DepthModelError, MissingDepthModelError, estimate_depth,
                                    load_depth_model, normalise_depth)
from nodes.preprocessors import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, Canny, DepthEstimation

H, W = 32, 40
TOP, BOTTOM, LEFT, RIGHT = 8, 24, 10, 30  # the border ring of the square (inclusive)


def ring_square(contrast: float = 1.0, shift: int = 0) -> torch.Tensor:
    """[H, W] square: interior `contrast`, border pixels contrast/2, background 0."""
    img = torch.zeros(H, W)
    img[TOP:BOTTOM + 1, LEFT + shift:RIGHT + shift + 1] = contrast / 2
    img[TOP + 1:BOTTOM, LEFT + shift + 1:RIGHT + shift] = contrast
    return img


def as_image(*greys: torch.Tensor) -> torch.Tensor:
    return torch.stack(greys).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


# --------------------------------------------------------------------------------------------
# Canny

def test_node_definitions_match_comfyui():
    assert NODE_DISPLAY_NAME_MAPPINGS == {"Canny": "Canny", "DepthEstimation": "Depth Map (transformers)"}
    registry = NodeRegistry()
    registry.register_all(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    info = registry.get("Canny").info()
    assert info["category"] == "image/preprocessors" and info["output"] == ["IMAGE"]
    required = info["input"]["required"]
    assert required["image"][0] == "IMAGE"
    for name, default in (("low_threshold", 0.4), ("high_threshold", 0.8)):
        kind, opts = required[name]
        assert kind == "FLOAT" and (opts["default"], opts["min"], opts["max"], opts["step"]) == (default, 0.01, 0.99, 0.01)
    depth = registry.get("DepthEstimation").info()
    assert depth["category"] == "image/preprocessors" and depth["display_name"] == "Depth Map (transformers)"
    assert list(depth["input"]["required"]) == ["image", "model", "resolution"]


def test_canny_edges_lie_on_the_square_border():
    edges = canny_edges(as_image(ring_square()), 0.4, 0.8)
    assert edges.shape == (1, H, W, 3) and edges.dtype == torch.float32
    e = edges[0, ..., 0]
    assert set(e.unique().tolist()) <= {0.0, 1.0}
    # Along the sides (2 px away from the corners, which the blur rounds): exactly the border pixels.
    for row in range(TOP + 2, BOTTOM - 1):
        assert e[row].nonzero().flatten().tolist() == [LEFT, RIGHT], row
    for col in range(LEFT + 2, RIGHT - 1):
        assert e[:, col].nonzero().flatten().tolist() == [TOP, BOTTOM], col
    # Nothing outside the ring's box, nothing well inside it.
    ys, xs = e.nonzero(as_tuple=True)
    assert ys.min() >= TOP and ys.max() <= BOTTOM and xs.min() >= LEFT and xs.max() <= RIGHT
    assert not e[TOP + 2:BOTTOM - 1, LEFT + 2:RIGHT - 1].any()


def test_canny_hard_square_edges_straddle_the_step():
    img = torch.zeros(H, W)
    img[TOP:BOTTOM, LEFT:RIGHT] = 1.0  # steps between TOP-1|TOP, BOTTOM-1|BOTTOM, ...
    e = canny_edges(as_image(img), 0.4, 0.8)[0, ..., 0]
    for row in range(TOP + 3, BOTTOM - 3):
        cols = e[row].nonzero().flatten().tolist()
        assert len(cols) == 2 and cols[0] in (LEFT - 1, LEFT) and cols[1] in (RIGHT - 1, RIGHT), (row, cols)
    for col in range(LEFT + 3, RIGHT - 3):
        rows = e[:, col].nonzero().flatten().tolist()
        assert len(rows) == 2 and rows[0] in (TOP - 1, TOP) and rows[1] in (BOTTOM - 1, BOTTOM), (col, rows)


def test_threshold_mapping_matches_kornia_gradient_scale():
    # kornia's magnitude at a step of contrast c centred on a pixel: 4 (Sobel smoothing 1+2+1)
    # times the blurred difference across it, with the 5-tap sigma-1 Gaussian.
    k = np.exp(-np.arange(-2, 3) ** 2 / 2.0)
    k /= k.sum()
    step = np.convolve([0, 0, 0, 0, 0.5, 1, 1, 1, 1], k, "same")
    contrast = 0.2
    peak = 4 * contrast * (step[5] - step[3])  # = 0.5175
    assert 0.51 < peak < 0.52
    image = as_image(ring_square(contrast))
    assert canny_edges(image, 0.50, 0.50)[0, TOP + 5, LEFT, 0].item() == 1.0
    assert not canny_edges(image, 0.53, 0.53).any()
    assert not canny_edges(image, 0.50, 0.53).any(), "weak edges without a strong pixel are dropped"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canny_is_kornias_canny(seed):
    # ComfyUI's node is kornia.filters.canny(image, low, high) on [B, C, H, W]; ours must give the
    # same map on natural-ish images (smooth noise plus shapes, two batch items, odd sizes).
    from kornia.filters import canny
    generator = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.interpolate(torch.rand(2, 3, 9, 13, generator=generator), size=(37, 53),
                                            mode="bicubic").clamp(0, 1)
    image[:, :, 10:20, 15:30] = torch.rand(2, 3, 1, 1, generator=generator)
    for low, high in ((0.05, 0.1), (0.2, 0.5), (0.4, 0.8)):
        expected = canny(image, low, high)[1].repeat(1, 3, 1, 1).movedim(1, -1)
        assert torch.equal(canny_edges(image.movedim(1, -1), low, high), expected), (low, high)


def test_canny_flat_image_has_no_edges():
    assert not canny_edges(as_image(torch.full((H, W), 0.5)), 0.01, 0.01).any()


def test_canny_batch_keeps_order_and_size():
    a, flat, b = ring_square(), torch.full((H, W), 0.3), ring_square(0.8, shift=-3)
    out = Canny().run(as_image(a, flat, b), 0.4, 0.8)[0]
    assert out.shape == (3, H, W, 3)
    assert torch.equal(out[0], canny_edges(as_image(a), 0.4, 0.8)[0])
    assert torch.equal(out[2], canny_edges(as_image(b), 0.4, 0.8)[0])
    assert not out[1].any() and out[0].any() and not torch.equal(out[0], out[2])
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])


def test_canny_odd_channels_and_sizes():
    rgba = torch.cat([as_image(ring_square()), torch.ones(1, H, W, 1)], -1)
    assert torch.equal(canny_edges(rgba, 0.4, 0.8), canny_edges(as_image(ring_square()), 0.4, 0.8))
    grey = ring_square().reshape(1, H, W, 1)
    assert torch.equal(canny_edges(grey, 0.4, 0.8), canny_edges(as_image(ring_square()), 0.4, 0.8))
    assert canny_edges(torch.rand(2, 7, 5, 3), 0.1, 0.2).shape == (2, 7, 5, 3)
    assert canny_edges(torch.zeros(0, 8, 8, 3), 0.4, 0.8).shape == (0, 8, 8, 3)


def test_canny_black_image_warns_and_names_the_node(caplog):
    with caplog.at_level(logging.WARNING):
        out = Canny().run(torch.zeros(2, 16, 24, 3), 0.4, 0.8)[0]
    assert out.shape == (2, 16, 24, 3) and not out.any()
    assert any("Canny" in r.getMessage() and "no edges found" in r.getMessage() for r in caplog.records)


def test_canny_thresholds_validated():
    assert Canny.validate(low_threshold=0.4, high_threshold=0.8) is True
    assert Canny.validate(low_threshold=0.5, high_threshold=0.5) is True
    assert "greater than high_threshold" in Canny.validate(low_threshold=0.9, high_threshold=0.2)
    assert "between 0.01 and 0.99" in Canny.validate(low_threshold=0.0, high_threshold=0.8)
    assert Canny.validate(low_threshold=None, high_threshold=0.8) is True  # linked: checked in run
    with pytest.raises(ValueError, match="greater than high_threshold"):
        Canny().run(torch.zeros(1, 8, 8, 3), 0.9, 0.2)


# --------------------------------------------------------------------------------------------
# A small graph: a source node, a preprocessor, a capture node.

CAPTURED: list[torch.Tensor] = []


class TestPattern(Node):
    """A deterministic [2, H, W, 3] test image: the ring square and a smooth gradient."""
    inputs = (String("kind", "ring"),)
    outputs = (Output("IMAGE"),)

    def run(self, kind):
        grad = torch.linspace(0, 1, W).expand(H, W)
        return (as_image(ring_square(), grad) if kind == "ring" else torch.zeros(2, H, W, 3),)


class Capture(Node):
    inputs = (Input("image", "IMAGE"),)
    outputs = ()
    output_node = True

    def run(self, image):
        CAPTURED.append(image)
        return ()


@pytest.fixture
def registry():
    registry = NodeRegistry()
    registry.register_all(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    registry.register_all([TestPattern, Capture])
    CAPTURED.clear()
    return registry


def run_prompt(registry, prompt):
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))


def test_canny_in_a_graph(registry, caplog):
    prompt = {"1": {"class_type": "TestPattern", "inputs": {"kind": "ring"}},
              "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
              "3": {"class_type": "Capture", "inputs": {"image": ["2", 0]}}}
    result = run_prompt(registry, prompt)
    assert result.ok, result.error
    assert torch.equal(CAPTURED[0], canny_edges(TestPattern().run("ring")[0], 0.4, 0.8))
    # a black image inside a run: empty edges and a warning naming the node id
    prompt["1"]["inputs"]["kind"] = "black"
    with caplog.at_level(logging.WARNING):
        assert run_prompt(registry, prompt).ok
    assert not CAPTURED[1].any() and CAPTURED[1].shape == (2, H, W, 3)
    assert any("Canny (node 2): no edges found in images 1, 2 of 2" in r.getMessage() for r in caplog.records)


def test_canny_bad_thresholds_fail_validation_naming_the_node(registry):
    prompt = {"1": {"class_type": "TestPattern", "inputs": {"kind": "ring"}},
              "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.9, "high_threshold": 0.2}},
              "3": {"class_type": "Capture", "inputs": {"image": ["2", 0]}}}
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    assert "node 2 (Canny)" in str(info.value) and "greater than high_threshold" in str(info.value)
    prompt["2"]["inputs"].update(low_threshold=0.4, high_threshold=1.5)
    with pytest.raises(ValidationError, match="between 0.01 and 0.99"):
        validate_prompt(prompt, registry)


# --------------------------------------------------------------------------------------------
# Depth

@pytest.fixture(scope="module")
def depth_models(tmp_path_factory):
    """models/ with a tiny ViT DPT (square input, MiDaS-like) and a tiny Depth Anything (Dinov2)."""
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTConfig,
                              DPTForDepthEstimation, DPTImageProcessor)
    models = tmp_path_factory.mktemp("preproc") / "models"
    torch.manual_seed(0)
    dpt = DPTForDepthEstimation(DPTConfig(
        image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=16))
    dpt.save_pretrained(models / "depth" / "tiny-dpt")
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                      ensure_multiple_of=16).save_pretrained(models / "depth" / "tiny-dpt")
    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=37, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    anything = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8))
    anything.save_pretrained(models / "depth" / "tiny-depth-anything")
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3).save_pretrained(models / "depth" / "tiny-depth-anything")
    return models


@pytest.fixture
def depth_layout(tmp_path, depth_models):
    previous = folders._current
    active = folders.use(folders.Folders(tmp_path, models=[depth_models]))
    yield active
    folders._current = previous


def scene(batch: int = 2, h: int = 40, w: int = 56) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    base = torch.linspace(0, 1, w).expand(h, w)
    return torch.stack([(base * (i + 1) % 1 + 0.3 * torch.rand(h, w, generator=g)).clamp(0, 1)
                        for i in range(batch)]).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


def test_depth_model_combo_lists_folders(depth_layout, registry):
    kind, _ = registry.get("DepthEstimation").info()["input"]["required"]["model"]
    assert kind == ["tiny-depth-anything", "tiny-dpt"]


@pytest.mark.parametrize("name", ["tiny-dpt", "tiny-depth-anything"])
def test_depth_shape_range_channels_determinism(depth_layout, name):
    image = scene()
    out = DepthEstimation().run(image, name, 0)[0]
    assert out.shape == (2, 40, 56, 3) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    for i in range(2):
        assert out[i].min() == 0 and out[i].max() == pytest.approx(1, abs=1e-6), "min-max normalised per image"
    assert torch.equal(out, DepthEstimation().run(image, name, 0)[0])
    depth_mod.clear_cache()
    assert torch.equal(out, DepthEstimation().run(image, name, 0)[0]), "a reload gives the same map"
    # batches keep order: the second image gives what it gives alone
    alone = DepthEstimation().run(image[1:2], name, 0)[0]
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=0)
    assert not torch.allclose(out[0], out[1])
    # another processing size works and keeps the output size
    assert DepthEstimation().run(image, name, 56)[0].shape == (2, 40, 56, 3)


def test_depth_model_loaded_once_and_reloaded_when_changed(depth_layout, depth_models):
    folder = depth_models / "depth" / "tiny-dpt"
    first = load_depth_model(folder, device="cpu")
    assert load_depth_model(folder, device="cpu") is first
    assert first.model_type == "dpt" and first.square_input and first.output_kind == "inverse"
    assert first.default_resolution == 32 and not first.model.training
    config = folder / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert load_depth_model(folder, device="cpu") is not first
        assert DepthEstimation.fingerprint(model="tiny-dpt") != ""
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_depth_missing_model_says_what_to_put_where(depth_layout):
    with pytest.raises(MissingDepthModelError) as info:
        DepthEstimation().run(scene(1), "midas", 0)
    message = str(info.value)
    assert "DepthEstimation" in message and "midas" in message
    assert "models/depth/midas/" in message
    assert "config.json + model.safetensors + preprocessor_config.json" in message
    assert "Intel/dpt-hybrid-midas" in message and "Depth-Anything-V2-Small-hf" in message
    assert "models/depth/midas/" in DepthEstimation.validate(model="midas")


def test_depth_folder_with_only_a_config(depth_layout, depth_models):
    folder = depth_models / "depth" / "only-config"
    folder.mkdir()
    (folder / "config.json").write_text((depth_models / "depth" / "tiny-dpt" / "config.json").read_text())
    try:
        with pytest.raises(DepthModelError) as info:
            DepthEstimation().run(scene(1), "only-config", 0)
        message = str(info.value)
        assert str(folder) in message and "weights" in message and "preprocessor_config.json" in message
        assert str(folder) in DepthEstimation.validate(model="only-config")
    finally:
        (folder / "config.json").unlink()
        folder.rmdir()


def test_depth_not_a_depth_model(depth_layout, depth_models):
    folder = depth_models / "depth" / "not-depth"
    folder.mkdir()
    for name in ("model.safetensors", "preprocessor_config.json"):
        (folder / name).write_bytes((depth_models / "depth" / "tiny-dpt" / name).read_bytes())
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    try:
        with pytest.raises(DepthModelError, match="not a depth-estimation model"):
            DepthEstimation().run(scene(1), "not-depth", 0)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_depth_black_image_gives_a_flat_map(depth_layout, caplog):
    image = torch.cat([torch.zeros(1, 40, 56, 3), scene(1)])
    with caplog.at_level(logging.WARNING):
        out = DepthEstimation().run(image, "tiny-depth-anything", 0)[0]
    assert out.shape == (2, 40, 56, 3)
    assert not out[0].any() and out[1].max() == pytest.approx(1, abs=1e-6)
    assert any("DepthEstimation" in r.getMessage() and "flat depth map" in r.getMessage() for r in caplog.records)
    assert DepthEstimation().run(torch.zeros(0, 8, 8, 3), "tiny-dpt", 0)[0].shape == (0, 8, 8, 3)


def test_depth_convention_near_is_bright(depth_models):
    """With a stub network whose prediction grows left to right: inverse-depth models keep it
    (right = near = bright); metric models (distance) are inverted (left = near = bright)."""
    real = load_depth_model(depth_models / "depth" / "tiny-dpt", device="cpu")

    class Ramp(torch.nn.Module):
        def forward(self, pixel_values):
            n, _, h, w = pixel_values.shape
            return type("Out", (), {"predicted_depth": torch.linspace(1, 10, w).expand(n, h, w).clone()})()

    for kind, brightest_col in (("inverse", -1), ("metric", 0)):
        stub = DepthModel(model=Ramp(), processor=real.processor, folder=real.folder, model_type="stub",
                          output_kind=kind, square_input=True, default_resolution=32, device=torch.device("cpu"))
        out = estimate_depth(stub, scene(1, 20, 30))[0, ..., 0]
        assert out[:, brightest_col].min() > 1 - 1e-3 and out[:, -1 - brightest_col].max() < 1e-3, kind
    assert not normalise_depth(torch.full((1, 4, 4), 3.0)).any()


def test_depth_in_a_graph_and_validation(depth_layout, registry):
    prompt = {"1": {"class_type": "TestPattern", "inputs": {"kind": "ring"}},
              "2": {"class_type": "DepthEstimation", "inputs": {"image": ["1", 0], "model": "tiny-dpt", "resolution": 0}},
              "3": {"class_type": "Capture", "inputs": {"image": ["2", 0]}}}
    result = run_prompt(registry, prompt)
    assert result.ok, result.error
    assert CAPTURED[0].shape == (2, H, W, 3)
    prompt["2"]["inputs"]["model"] = "absent"
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    assert "node 2 (DepthEstimation)" in str(info.value) and "models/depth/absent/" in str(info.value)
