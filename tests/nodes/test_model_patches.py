"""The model patch nodes: ComfyUI's names, inputs and defaults; bad input named at the patch node or, for a
failure during sampling, by the patch's node name; independent references for FreeU (diffusers) and the
patch algorithms' invariants. Their numerics against ComfyUI itself are the conformance cases (see
docs/sampling.md's table)."""
import pytest
import torch

from nodegraph import Executor, Input, Node, NodeInputError, NodeRegistry, Output, OutputCache, validate_prompt
from nodes.default_model import DEFAULT_CHECKPOINT, ensure_default_checkpoint
from nodes.sd.model_options_unet import FreeU, TokenMerging, bipartite_soft_matching, fourier_box_filter
from nodes.sd.patcher import ModelPatcher
from nodes.sd.unet import UNetConfig, UNetModel

# node -> [(input, default)] in ComfyUI 0.3.64's order (a UI file's widgets_values follow this order)
COMFY_INPUTS = {
    "ModelSamplingDiscrete": [("model", None), ("sampling", "eps"), ("zsnr", False)],
    "ModelSamplingContinuousEDM": [("model", None), ("sampling", "v_prediction"), ("sigma_max", 120.0),
                                   ("sigma_min", 0.002)],
    "ModelSamplingContinuousV": [("model", None), ("sampling", "v_prediction"), ("sigma_max", 500.0),
                                 ("sigma_min", 0.03)],
    "RescaleCFG": [("model", None), ("multiplier", 0.7)],
    "FreeU": [("model", None), ("b1", 1.1), ("b2", 1.2), ("s1", 0.9), ("s2", 0.2)],
    "FreeU_V2": [("model", None), ("b1", 1.3), ("b2", 1.4), ("s1", 0.9), ("s2", 0.2)],
    "SelfAttentionGuidance": [("model", None), ("scale", 0.5), ("blur_sigma", 2.0)],
    "PerturbedAttentionGuidance": [("model", None), ("scale", 3.0)],
    "HyperTile": [("model", None), ("tile_size", 256), ("swap_size", 2), ("max_depth", 0), ("scale_depth", False)],
    "TomePatchModel": [("model", None), ("ratio", 0.3)],
    "PatchModelAddDownscale": [("model", None), ("block_number", 3), ("downscale_factor", 2.0),
                               ("start_percent", 0.0), ("end_percent", 0.35), ("downscale_after_skip", True),
                               ("downscale_method", "bicubic"), ("upscale_method", "bicubic")],
    "UNetSelfAttentionMultiply": [("model", None), ("q", 1.0), ("k", 1.0), ("v", 1.0), ("out", 1.0)],
    "UNetCrossAttentionMultiply": [("model", None), ("q", 1.0), ("k", 1.0), ("v", 1.0), ("out", 1.0)],
    "CLIPAttentionMultiply": [("clip", None), ("q", 1.0), ("k", 1.0), ("v", 1.0), ("out", 1.0)],
    "DifferentialDiffusion": [("model", None), ("strength", 1.0)],
    "APG": [("model", None), ("eta", 1.0), ("norm_threshold", 5.0), ("momentum", 0.0)],
    "CFGZeroStar": [("model", None)],
    "CFGNorm": [("model", None), ("strength", 1.0)],
    "TCFG": [("model", None)],
    "Mahiro": [("model", None)],
    "FreSca": [("model", None), ("scale_low", 1.0), ("scale_high", 1.25), ("freq_cutoff", 20)],
    "Epsilon Scaling": [("model", None), ("scaling_factor", 1.005)],
}


@pytest.mark.parametrize("name", sorted(COMFY_INPUTS))
def test_node_inputs_and_defaults_are_comfyuis(library, name):
    info = library.get(name).info()
    order = info["input_order"]["required"] + info["input_order"].get("optional", [])
    assert order == [n for n, _ in COMFY_INPUTS[name]]
    spec = {**info["input"]["required"], **info["input"].get("optional", {})}
    for input_name, default in COMFY_INPUTS[name]:
        if default is None:
            continue
        kind, options = spec[input_name][0], spec[input_name][1] if len(spec[input_name]) > 1 else {}
        actual = options.get("default", kind[0] if isinstance(kind, list) else None)
        assert actual == default, (name, input_name, actual)
    assert info["output"] == (["CLIP"] if name == "CLIPAttentionMultiply" else ["MODEL"])


# -- bad input --------------------------------------------------------------------------------------

def patched_graph(patch_class, patch_inputs, steps=2):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
        "2": {"class_type": patch_class, "inputs": {"model": ["1", 0], **patch_inputs}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 1, "steps": steps, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "karras",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
    }


def execute(prompt, library, targets=("6",)):
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, library, targets=list(targets)))


@pytest.mark.parametrize("patch_class, inputs, input_name, fragment", [
    ("PatchModelAddDownscale", {"block_number": 20, "downscale_factor": 2.0, "start_percent": 0.0,
                                "end_percent": 0.35, "downscale_after_skip": True, "downscale_method": "bicubic",
                                "upscale_method": "bicubic"}, "block_number", "block 20 does not exist"),
    ("ModelSamplingContinuousEDM", {"sampling": "cosmos_rflow", "sigma_max": 120.0, "sigma_min": 0.002},
     "sampling", "not SD1.x"),
    ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.0},
     "sigma_min", "greater than 0"),
    ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 0.0}, "blur_sigma", "greater than 0"),
])
def test_a_patch_that_cannot_apply_is_refused_at_its_node(layout, library, patch_class, inputs, input_name, fragment):
    ensure_default_checkpoint(layout)
    result = execute(patched_graph(patch_class, inputs), library)
    assert result.status == "error"
    assert (result.error.node_id, result.error.node_type, result.error.input_name) == ("2", patch_class, input_name)
    assert fragment in result.error.exception_message


def test_patches_refuse_a_unet_without_the_blocks_they_need():
    from nodes.model_patches_guidance import PerturbedAttentionGuidance, SelfAttentionGuidance
    from nodes.model_patches_unet import FreeU as FreeUNode

    narrow = ModelPatcher(UNetModel(UNetConfig(model_channels=32, channel_mult=(1, 1), transformer_depth=(1, 1),
                                               transformer_depth_middle=0, context_dim=32)))
    with pytest.raises(NodeInputError, match=r"FreeU acts on decoder blocks 128 or 64 .* this model's are \[32\]"):
        FreeUNode().run(narrow, 1.1, 1.2, 0.9, 0.2)
    for node in (SelfAttentionGuidance(), PerturbedAttentionGuidance()):
        with pytest.raises(NodeInputError, match="no self-attention at block middle 0"):
            node.run(narrow, *([0.5, 2.0] if isinstance(node, SelfAttentionGuidance) else [3.0]))


class _BrokenPatch(Node):
    """Test node: a UNet patch that returns a tensor of the wrong width."""
    category = "testing"
    inputs = (Input("model", "MODEL"),)
    outputs = (Output("MODEL"),)

    def run(self, model):
        return (model.with_options(model.options.with_input_block_patch(lambda h, pc: h[:, :1], source="BrokenPatch")),)


def test_a_patch_failing_inside_the_unet_is_named_by_the_sampler(layout, library):
    ensure_default_checkpoint(layout)
    registry = NodeRegistry()
    for definition in library:
        registry.register(definition.cls, definition.name, display_name=definition.display_name)
    registry.register(_BrokenPatch, "BrokenPatch")
    result = execute(patched_graph("BrokenPatch", {}), registry)
    assert result.status == "error" and result.error.node_type == "KSampler"
    assert result.error.exception_message.startswith("BrokenPatch: sampling failed with this model patch applied")
    assert result.error.exception_type.endswith("ModelPatchError")
    # the executor goes on: the same graph without the patch runs
    graph = patched_graph("RescaleCFG", {"multiplier": 0.7})
    assert execute(graph, library).ok


# -- the patch algorithms ------------------------------------------------------------------------

def test_freeu_equals_diffusers_apply_freeu():
    from diffusers.utils.torch_utils import apply_freeu, fourier_filter

    g = torch.Generator().manual_seed(0)
    for size in (8, 6):  # a power of two and not
        h, skip = torch.randn(2, 128, size, size, generator=g), torch.randn(2, 128, size, size, generator=g)
        torch.testing.assert_close(fourier_box_filter(skip, 1, 0.2), fourier_filter(skip, threshold=1, scale=0.2))
        ours = FreeU(((256, 1.1, 0.9), (128, 1.2, 0.2)))(h, skip, None)
        ref = apply_freeu(1, h.clone(), skip.clone(), b1=1.1, b2=1.2, s1=0.9, s2=0.2)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b)
        assert FreeU(((256, 1.1, 0.9),))(h, skip, None) == (h, skip)  # no block of that width: untouched


def test_freeu_v2_scales_by_the_normalised_mean():
    h = torch.zeros(1, 4, 1, 2)
    h[0, :, 0, 0], h[0, :, 0, 1] = 1.0, 3.0  # channel means 1 and 3 -> normalised 0 and 1
    out, _ = FreeU(((4, 2.0, 1.0),), v2=True)(h, torch.zeros(1, 4, 2, 2), None)
    torch.testing.assert_close(out[0, :2, 0], torch.tensor([[1.0, 6.0], [1.0, 6.0]]))  # ×1 and ×2 on half
    torch.testing.assert_close(out[0, 2:], h[0, 2:])


def test_token_merging_keeps_unmerged_tokens_and_averages_merged_ones():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 16, generator=g)
    merge, unmerge = bipartite_soft_matching(x, 8, 8, 2, 2, 19, torch.Generator().manual_seed(1))
    merged = merge(x)
    assert merged.shape == (2, 64 - 19, 16)
    restored = unmerge(merged)
    # 64 - 2·19 tokens (neither merged away nor merged into) come back exactly; ratio 0.3 of 64 = 19
    exact = (restored - x).abs().amax(dim=-1) == 0
    assert int(exact.sum(dim=1).min()) >= 64 - 2 * 19
    assert torch.isfinite(restored).all()
    # same generator state, same partition
    again = bipartite_soft_matching(x, 8, 8, 2, 2, 19, torch.Generator().manual_seed(1))[0](x)
    assert torch.equal(again, merged)
    assert TokenMerging(0.3).ratio == 0.3
