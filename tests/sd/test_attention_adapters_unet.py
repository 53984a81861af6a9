"""GLIGEN and hypernetworks inside the whole UNet, on the model options, against diffusers: the tiny UNet
with a tiny GLIGEN vs UNet2DConditionModel(attention_type="gated"); with an A1111 hypernetwork vs diffusers'
UNet running an attention processor that applies the hand-written MLPs to the key / value inputs."""
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import load_file

from nodes.gligen import LoadedGligen
from nodes.hypernetwork import HypernetworkPatch
from nodes.sd.gligen import MAX_OBJECTS, gligen_unet_patches, load_gligen
from nodes.sd.hypernetwork import load_hypernetwork
from nodes.sd.model_options import NO_OPTIONS, PatchContext, SamplingRun
from nodes.sd.tiny_adapters import make_tiny_gligen
from tests.sd.test_hypernetwork import reference_mlp, write_hypernetwork
from tests.sd.test_unet import diffusers_config

TOL = 1e-4


def ours(unet, x, t, ctx, options):
    pc = PatchContext(options.unet, torch.full((x.shape[0],), 5.0), (0,), SamplingRun())
    with torch.no_grad():
        return unet(x, t, ctx, patch_context=pc)


def reference(unet, extra: dict | None = None, **kwargs) -> UNet2DConditionModel:
    config = diffusers_config(unet.config)
    ldm = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    ldm.update({"model.diffusion_model." + k: v for k, v in (extra or {}).items()})
    ref = UNet2DConditionModel(**config, **kwargs).eval()
    return ref, convert_ldm_unet_checkpoint(ldm, config)


def test_gligen_boxes_in_the_unet_equal_diffusers(tiny, tmp_path):
    path = make_tiny_gligen(tmp_path / "gligen.safetensors", seed=2)
    gligen = load_gligen(path, device="cpu", dtype=torch.float32)
    ref, sd = reference(tiny.unet, {k: v for k, v in load_file(str(path)).items() if ".fuser." in k},
                        attention_type="gated")
    ref.position_net.linears = torch.nn.Sequential(torch.nn.Linear(32 + 64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                                   torch.nn.SiLU(), torch.nn.Linear(64, 32))  # the tiny hidden width
    sd.update({k: v for k, v in load_file(str(path)).items() if k.startswith("position_net.")})
    ref.load_state_dict(sd, strict=True)

    g = torch.Generator().manual_seed(3)
    x, t, ctx = torch.randn(2, 4, 8, 12, generator=g), torch.tensor([300.0, 700.0]), torch.randn(2, 77, 32, generator=g)
    phrases = torch.randn(2, 32, generator=g)
    boxes = [(phrases[0:1], 4, 6, 0, 0), (phrases[1], 4, 4, 4, 8)]  # (embedding, h, w, y, x), latent pixels
    options = gligen_unet_patches(("position", LoadedGligen(gligen, "tiny"), boxes), x.shape, "cpu")(NO_OPTIONS)
    actual = ours(tiny.unet, x, t, ctx, options)

    coords = torch.zeros(2, MAX_OBJECTS, 4)
    coords[:, 0] = torch.tensor([0, 0, 6 / 12, 4 / 8])
    coords[:, 1] = torch.tensor([8 / 12, 4 / 8, 12 / 12, 8 / 8])
    masks = torch.zeros(2, MAX_OBJECTS)
    masks[:, :2] = 1
    embeddings = torch.zeros(2, MAX_OBJECTS, 32)
    embeddings[:, :2] = phrases
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=ctx, cross_attention_kwargs={
            "gligen": {"boxes": coords, "masks": masks, "positive_embeddings": embeddings}}).sample
        plain = tiny.unet(x, t, ctx)
    assert (expected - plain).abs().max() > 1e-2  # the boxes change the prediction
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)


class HypernetworkProcessor:
    """diffusers attention with A1111's hypernetwork: key / value inputs rewritten by the width's MLPs."""

    def __init__(self, plans, strength):
        self.plans, self.strength = plans, strength

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        k_in = v_in = context
        if context.shape[-1] in self.plans:
            k_plan, v_plan = self.plans[context.shape[-1]]
            k_in = context + reference_mlp(k_plan, context) * self.strength
            v_in = context + reference_mlp(v_plan, context) * self.strength
        q, k, v = attn.to_q(hidden_states), attn.to_k(k_in), attn.to_v(v_in)
        split = lambda t: t.view(t.shape[0], t.shape[1], attn.heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], -1, attn.heads * out.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("activation, layer_norm", [("relu", True), ("linear", False)])
def test_hypernetwork_in_the_unet_equals_diffusers(tiny, tmp_path, activation, layer_norm):
    plans = write_hypernetwork(tmp_path / "hn.pt", activation, layer_norm, structure=(1, 2, 1), seed=5)
    hypernetwork = load_hypernetwork(tmp_path / "hn.pt")  # widths 32 (level 0 and the text) and 64 (level 1)
    patch = HypernetworkPatch(hypernetwork, 0.8)
    options = NO_OPTIONS.with_attention_patch("self", input=patch, source="t").with_attention_patch(
        "cross", input=patch, source="t")
    ref, sd = reference(tiny.unet)
    ref.load_state_dict(sd, strict=True)
    ref.set_attn_processor(HypernetworkProcessor(plans, 0.8))
    g = torch.Generator().manual_seed(4)
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100.0, 900.0]), torch.randn(2, 77, 32, generator=g)
    actual = ours(tiny.unet, x, t, ctx, options)
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=ctx).sample
        plain = tiny.unet(x, t, ctx)
    assert (expected - plain).abs().max() > 1e-2
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)
    zero = HypernetworkPatch(hypernetwork, 0.0)
    none = NO_OPTIONS.with_attention_patch("self", input=zero, source="t").with_attention_patch("cross", input=zero,
                                                                                                source="t")
    assert torch.equal(ours(tiny.unet, x, t, ctx, none), plain)  # strength 0 is the plain model
