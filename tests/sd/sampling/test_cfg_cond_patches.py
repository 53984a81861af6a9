"""Per-condition additions in the CFG denoiser, as ComfyUI handles them: a cond's GLIGEN boxes become a UNet
patch for that cond's evaluations only (never batched with other conds), a negative without boxes borrows
the positive's, and CLIPTextEncodeControlnet's context is what the ControlNets attend to."""
import torch

from nodes.gligen import LoadedGligen
from nodes.sd.gligen import load_gligen
from nodes.sd.sampling.cfg import CFGDenoiser
from nodes.sd.sampling.model_sampling import ModelSamplingEPS
from nodes.sd.tiny_adapters import make_tiny_gligen

MS = ModelSamplingEPS()
SIGMA = torch.tensor([3.0])


class RecordingUNet:
    """eps = 0.1·x; records per call: batch rows, whether a patch context with a GLIGEN patch came along."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_in, timesteps, context, control=None, patch_context=None):
        patches = () if patch_context is None else patch_context.patches.after_self_attention
        self.calls.append((x_in.shape[0], len(patches), float(context.mean())))
        return 0.1 * x_in


def text(value):
    return torch.full((1, 77, 32), float(value))


def test_gligen_conds_run_alone_and_the_negative_borrows_the_boxes(tmp_path):
    gligen = LoadedGligen(load_gligen(make_tiny_gligen(tmp_path / "g.safetensors"), device="cpu"), "g")
    boxes = ("position", gligen, [(torch.zeros(1, 32), 4, 4, 0, 0)])
    unet = RecordingUNet()
    x = torch.randn(1, 4, 8, 8)
    CFGDenoiser(unet, MS, [[text(1), {"gligen": boxes}]], [[text(-1), {}]], cfg=5.0)(x, SIGMA)
    assert sorted(unet.calls) == [(1, 1, -1.0), (1, 1, 1.0)]  # two calls, each with the GLIGEN patch

    unet = RecordingUNet()
    CFGDenoiser(unet, MS, [[text(1), {}]], [[text(-1), {}]], cfg=5.0)(x, SIGMA)
    assert unet.calls == [(2, 0, 0.0)]  # without boxes: one batched call, no patch


class RecordingControl:
    def __init__(self):
        self.contexts = []

    def get_control(self, x_in, timesteps, context, sigma, batch_size):
        self.contexts.append(context.clone())
        return None


def test_controlnet_sees_the_controlnet_prompt_and_such_conds_batch_apart():
    control = RecordingControl()
    positive = [[text(1), {"control": control, "cross_attn_controlnet": text(7)}]]
    negative = [[text(-1), {"control": control}]]
    unet = RecordingUNet()
    CFGDenoiser(unet, MS, positive, negative, cfg=5.0)(torch.randn(1, 4, 8, 8), SIGMA)
    means = sorted(float(c.mean()) for c in control.contexts)
    assert means == [-1.0, 7.0]   # the positive's ControlNet pass saw its own prompt, the negative the text
    assert len(unet.calls) == 2   # ComfyUI does not batch conds whose keys differ
