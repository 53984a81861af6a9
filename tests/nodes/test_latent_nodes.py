"""Latent nodes against hand-derived values and numpy / scipy references (ComfyUI's own outputs for
the same nodes are the conformance cases `latent_*`, `batch3_*`)."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nodegraph import Executor, Node, NodeInputError, NodeRegistry, Output, OutputCache, validate_prompt
from nodes.default_model import ensure_default_checkpoint
from nodes.latent_batch import LatentBatch, LatentBatchSeedBehavior, LatentFromBatch, RebatchLatents, RepeatLatentBatch
from nodes.latent_files import LoadLatent, SaveLatent
from nodes.latent_math import (LatentAdd, LatentApplyOperation, LatentInterpolate, LatentMultiply,
                               LatentOperationSharpen, LatentOperationTonemapReinhard, LatentSubtract)
from nodes.latent_transform import (LatentBlend, LatentComposite, LatentCompositeMasked, LatentCrop, LatentFlip,
                                    LatentRotate)

CASES = Path(__file__).resolve().parents[1] / "conformance" / "data" / "cases"


def latent(b=1, c=4, h=8, w=8, seed=0, **extra):
    return {"samples": torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed)), **extra}


def test_flip_and_rotate_match_numpy():
    x = latent(2, h=6, w=8)
    a = x["samples"].numpy()
    assert np.array_equal(LatentFlip().run(x, "x-axis: vertically")[0]["samples"].numpy(), a[:, :, ::-1, :])
    assert np.array_equal(LatentFlip().run(x, "y-axis: horizontally")[0]["samples"].numpy(), a[:, :, :, ::-1])
    for k, name in enumerate(["none", "90 degrees", "180 degrees", "270 degrees"]):
        out = LatentRotate().run(x, name)[0]["samples"].numpy()
        assert np.array_equal(out, np.rot90(a, k=-k, axes=(2, 3))), name  # clockwise
    # a clockwise quarter turn takes the top-left element to the top-right, the bottom-left to the top-left
    turned = LatentRotate().run(x, "90 degrees")[0]["samples"]
    assert turned[0, 0, 0, -1] == x["samples"][0, 0, 0, 0] and turned[0, 0, 0, 0] == x["samples"][0, 0, -1, 0]


def test_crop_in_pixels_keeps_at_least_8_latent_pixels():
    x = latent(h=16, w=16)
    s = x["samples"]
    assert torch.equal(LatentCrop().run(x, 64, 32, 8, 16)[0]["samples"], s[:, :, 2:6, 1:9])
    # a corner past the edge is moved back so 8 latent pixels remain
    assert torch.equal(LatentCrop().run(x, 512, 512, 512, 120)[0]["samples"], s[:, :, 8:16, 8:16])


def test_composite_pastes_at_pixel_position():
    to, frm = latent(h=8, w=8, seed=1), latent(h=8, w=8, seed=2)
    out = LatentComposite().run(to, frm, 32, 0, 0)[0]["samples"]
    expected = to["samples"].clone()
    expected[:, :, :, 4:] = frm["samples"][:, :, :, :4]  # cut off at the destination's edge
    assert torch.equal(out, expected)
    assert not torch.equal(to["samples"], out), "the input latent is not modified"


def test_composite_feather_ramp_hand_derived():
    to = {"samples": torch.zeros(1, 1, 8, 8)}
    frm = {"samples": torch.ones(1, 1, 4, 4)}
    out = LatentComposite().run(to, frm, 8, 8, 16)[0]["samples"][0, 0]
    # every side of the 4x4 paste is inside the 8x8 latent; feather 16 px = 2 latent px: edge rows and
    # columns get 1/2, the next ones 2/2; corners multiply.
    ramp = torch.tensor([0.5, 1.0, 1.0, 0.5])
    expected = torch.zeros(8, 8)
    expected[1:5, 1:5] = ramp[:, None] * ramp[None, :]
    assert torch.allclose(out, expected)
    # at the destination's own edge there is no fade
    out = LatentComposite().run(to, frm, 0, 0, 16)[0]["samples"][0, 0]
    assert torch.allclose(out[:4, :4], torch.tensor([1.0, 1.0, 1.0, 0.5])[:, None] * torch.tensor([1.0, 1.0, 1.0, 0.5]))


def test_composite_masked_resizes_the_mask_to_the_source():
    dest, src = latent(seed=3), latent(seed=4)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # left half, at image size
    out = LatentCompositeMasked().run(dest, src, 0, 0, False, mask)[0]["samples"]
    # bilinear 64 -> 8 samples columns 3.5, 11.5, ...: latent columns 0..3 are 1, 4..7 are 0
    assert torch.equal(out[..., :4], src["samples"][..., :4]) and torch.equal(out[..., 4:], dest["samples"][..., 4:])
    whole = LatentCompositeMasked().run(dest, {"samples": torch.ones(1, 4, 2, 2)}, 16, 24, False)[0]["samples"]
    assert torch.equal(whole[:, :, 3:5, 2:4], torch.ones(1, 4, 2, 2))
    assert whole.sum() == dest["samples"].sum() - dest["samples"][:, :, 3:5, 2:4].sum() + 16


def test_blend_add_subtract_multiply():
    a, b = latent(seed=5), latent(seed=6)
    x, y = a["samples"].numpy(), b["samples"].numpy()
    assert np.allclose(LatentBlend().run(a, b, 0.3)[0]["samples"].numpy(), x * 0.3 + y * 0.7)
    assert np.allclose(LatentAdd().run(a, b)[0]["samples"].numpy(), x + y)
    assert np.allclose(LatentSubtract().run(a, b)[0]["samples"].numpy(), x - y)
    assert np.allclose(LatentMultiply().run(a, 1.5)[0]["samples"].numpy(), x * 1.5)
    # another size and batch: resized, batch repeated (a constant stays constant when resized)
    three = {"samples": torch.ones(3, 4, 8, 8)}
    assert torch.allclose(LatentAdd().run(three, {"samples": torch.full((1, 4, 4, 6), 2.0)})[0]["samples"],
                          torch.full((3, 4, 8, 8), 3.0))


def test_latents_of_another_model_family_are_refused_with_both_shapes():
    with pytest.raises(NodeInputError, match=r"\(1, 4, 8, 8\) and \(1, 16, 8, 8\)"):
        LatentAdd().run(latent(), {"samples": torch.zeros(1, 16, 8, 8)})


def test_interpolate_mixes_direction_and_length_hand_derived():
    a = torch.zeros(1, 4, 1, 1)
    a[0, :2, 0, 0] = torch.tensor([3.0, 4.0])       # length 5, direction (0.6, 0.8, 0, 0)
    b = torch.zeros(1, 4, 1, 1)
    b[0, 3, 0, 0] = 2.0                             # length 2, direction (0, 0, 0, 1)
    out = LatentInterpolate().run({"samples": a}, {"samples": b}, 0.5)[0]["samples"][0, :, 0, 0]
    direction = torch.tensor([0.3, 0.4, 0.0, 0.5]) / (0.5 ** 0.5)
    assert torch.allclose(out, direction * 3.5)
    assert torch.allclose(LatentInterpolate().run({"samples": a}, {"samples": b}, 1.0)[0]["samples"], a)
    # a zero vector has no direction: it contributes none, and nothing becomes NaN
    zero = LatentInterpolate().run({"samples": torch.zeros(2, 4, 3, 3)}, {"samples": b}, 0.5)[0]["samples"]
    assert torch.isfinite(zero).all() and torch.allclose(zero[0, 3], torch.ones(3, 3))


def test_batch_nodes_and_batch_index():
    three = latent(3, seed=7)
    one = LatentFromBatch().run(three, 1, 1)[0]
    assert torch.equal(one["samples"], three["samples"][1:2]) and one["batch_index"] == [1]
    clamped = LatentFromBatch().run(three, 9, 5)[0]
    assert torch.equal(clamped["samples"], three["samples"][2:]) and clamped["batch_index"] == [2]
    masked = LatentFromBatch().run({**three, "noise_mask": torch.arange(3.0).reshape(3, 1, 1, 1)}, 1, 2)[0]
    assert masked["noise_mask"].flatten().tolist() == [1.0, 2.0]

    repeated = RepeatLatentBatch().run({**latent(2), "batch_index": [1, 2]}, 3)[0]
    assert repeated["samples"].shape[0] == 6 and repeated["batch_index"] == [1, 2, 3, 4, 5, 6]
    assert "batch_index" not in RepeatLatentBatch().run(latent(2), 2)[0]

    joined = LatentBatch().run(latent(2, seed=8), {"samples": torch.ones(1, 4, 4, 4)})[0]
    assert joined["samples"].shape == (3, 4, 8, 8) and joined["batch_index"] == [0, 1, 0]
    assert torch.allclose(joined["samples"][2], torch.ones(4, 8, 8))

    fixed = LatentBatchSeedBehavior().run({**three, "batch_index": [5, 6, 7]}, "fixed")[0]
    assert fixed["batch_index"] == [5, 5, 5]
    assert "batch_index" not in LatentBatchSeedBehavior().run({**three, "batch_index": [5, 6, 7]}, "random")[0]
    assert LatentBatchSeedBehavior().run(three, "fixed")[0]["batch_index"] == [0, 0, 0]


def test_rebatch_latents():
    a, b, c = latent(2, seed=1), latent(3, seed=2), latent(1, h=4, w=4, seed=3)
    masked = {**b, "noise_mask": torch.zeros(3, 1, 64, 64)}
    out = RebatchLatents().run([a, masked, c], [2])[0]
    assert [o["samples"].shape[0] for o in out] == [2, 2, 1, 1]
    assert [o["batch_index"] for o in out] == [[0, 1], [2, 3], [4], [5]]
    assert torch.equal(out[1]["samples"], torch.cat([a["samples"], b["samples"]])[2:4])
    # a had no mask (all ones: dropped), b's zero mask follows its three items
    assert "noise_mask" not in out[0] and out[1]["noise_mask"].shape == (2, 1, 64, 64)
    assert out[1]["noise_mask"].max() == 0 and out[2]["noise_mask"].max() == 0 and "noise_mask" not in out[3]
    assert out[3]["samples"].shape[-1] == 4


def test_tonemap_hand_derived():
    # every pixel vector has length 2: mean 2, std 0, so top = 2 * multiplier and the new length is
    # (1/m) / (1/m + 1) * 2m; multiplier 1 halves it, direction unchanged
    x = torch.zeros(1, 4, 3, 3)
    x[:, 1] = 2.0
    op = LatentOperationTonemapReinhard().run(1.0)[0]
    assert torch.allclose(op(latent=x), x / 2, atol=1e-6)
    assert torch.allclose(LatentOperationTonemapReinhard().run(3.0)[0](latent=x), x * 0.75, atol=1e-6)


def test_sharpen_against_scipy():
    x = latent(1, h=12, w=12, seed=9)["samples"]
    radius, sigma, alpha = 2, 1.0, 0.1
    out = LatentOperationSharpen().run(radius, sigma, alpha)[0](latent=x)
    # reference: ComfyUI's kernel (Gaussian over [-1, 1]^2, * -10 alpha, centre fixed so it sums to 1)
    # applied with scipy to each channel of the unit direction, mirrored borders, times the length
    grid = np.linspace(-1, 1, 2 * radius + 1)
    g = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * sigma ** 2))
    k = g / g.sum() * (-10 * alpha)
    k[radius, radius] += 1.0 - k.sum()
    length = np.linalg.norm(x.numpy(), axis=1, keepdims=True) + 1e-6
    direction = x.numpy() / length
    expected = np.stack([scipy.ndimage.correlate(direction[0, c], k, mode="mirror") for c in range(4)])[None] * length
    assert np.allclose(out.numpy(), expected, atol=1e-5)
    applied = LatentApplyOperation().run({"samples": x, "batch_index": [0]}, LatentOperationSharpen().run(2, 1.0, 0.0)[0])[0]
    assert torch.allclose(applied["samples"], x, atol=1e-5) and applied["batch_index"] == [0]  # alpha 0: identity


class ZeroOperation(Node):
    """A LATENT_OPERATION for the test: every latent becomes zeros."""
    category = "testing"
    outputs = (Output("LATENT_OPERATION"),)

    def run(self):
        return (lambda latent, **_: torch.zeros_like(latent),)


def test_apply_operation_cfg_edits_the_guidance(library, layout):
    """With an operation that zeroes (cond - uncond), every step's cond prediction becomes the uncond
    one: the result equals sampling with the negative prompt as the positive one (hand-derived from
    uncond + op(cond - uncond) = uncond)."""
    ensure_default_checkpoint(layout)
    registry = NodeRegistry()
    for definition in library:
        registry.register(definition.cls, definition.name)
    registry.register(ZeroOperation, "ZeroOperation")

    def sample(patched: bool, positive_text: str):
        prompt = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nodegraph-demo.safetensors"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": positive_text, "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a gray background", "clip": ["1", 1]}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {"class_type": "ZeroOperation", "inputs": {}},
            "6": {"class_type": "LatentApplyOperationCFG", "inputs": {"model": ["1", 0], "operation": ["5", 0]}},
            "7": {"class_type": "KSampler", "inputs": {
                "model": ["6", 0] if patched else ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "karras", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                "denoise": 1.0}},
            "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "cfg_op"}},
        }
        result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))
        assert result.ok, result.error
        name = result.outputs["8"]["latents"][0]["filename"]
        return load_file(layout.output / name)["latent_tensor"]

    patched = sample(True, "a red circle on a white background, center")
    assert torch.allclose(patched, sample(False, "a gray background"), atol=1e-5)
    assert not torch.allclose(patched, sample(False, "a red circle on a white background, center"), atol=1e-2)


def test_save_latent_writes_comfyui_format(layout):
    x = latent(2, seed=10)
    ui = SaveLatent().run(x, "latents/test", prompt={"1": {"class_type": "X", "inputs": {}}},
                          extra_pnginfo={"workflow": {"nodes": []}}).ui
    entry = ui["latents"][0]
    assert entry == {"filename": "test_00001_.latent", "subfolder": "latents", "type": "output"}
    path = layout.output / "latents" / "test_00001_.latent"
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert f.get_tensor("latent_format_version_0").shape == (0,)
        assert torch.equal(f.get_tensor("latent_tensor"), x["samples"])
        assert json.loads(f.metadata()["prompt"])["1"]["class_type"] == "X"
        assert json.loads(f.metadata()["workflow"]) == {"nodes": []}
    assert SaveLatent().run(x, "latents/test").ui["latents"][0]["filename"] == "test_00002_.latent"


def test_load_latent_reads_comfyuis_file_and_the_old_format(layout):
    (layout.input / "comfy.latent").write_bytes((CASES / "base_euler_karras.latent").read_bytes())
    reference = load_file(CASES / "base_euler_karras.latent.safetensors")["samples"]
    assert LoadLatent.validate("comfy.latent") is True
    assert torch.equal(LoadLatent().run("comfy.latent")[0]["samples"], reference)
    save_file({"latent_tensor": reference * 0.18215}, str(layout.input / "old.latent"))  # no version tensor
    assert torch.allclose(LoadLatent().run("old.latent")[0]["samples"], reference, atol=1e-5)
    # round trip through SaveLatent, read from the output folder
    SaveLatent().run({"samples": reference}, "again")
    assert torch.equal(LoadLatent().run("again_00001_.latent [output]")[0]["samples"], reference)
    from nodes.latent_files import _input_latents
    assert _input_latents() == ["comfy.latent", "old.latent"]


def test_load_latent_bad_files_name_the_problem(layout):
    (layout.input / "junk.latent").write_bytes(b"not a safetensors file at all")
    with pytest.raises(NodeInputError, match="junk.latent is not a .latent file"):
        LoadLatent().run("junk.latent")
    save_file({"weights": torch.zeros(2)}, str(layout.input / "lora.latent"))
    with pytest.raises(NodeInputError, match="no 'latent_tensor'"):
        LoadLatent().run("lora.latent")
    assert "Invalid latent file" in LoadLatent.validate("missing.latent")
    assert "Invalid latent file" in LoadLatent.validate("../../etc/passwd")
