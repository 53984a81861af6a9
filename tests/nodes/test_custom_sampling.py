"""Custom-sampling nodes: their sockets as ComfyUI 0.3.64 declares them (so UI files convert and validate
unchanged), a UI file converting to ComfyUI's own API prompt, the sigma nodes against hand-derived
values, and bad input naming the node and the reason. Numerics against ComfyUI's outputs are in
tests/conformance (sca_*, sc_*, samplernode_*, schednode_*, *_guider*, ...)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.errors import ValidationError
from nodegraph.workflow.ui_format import ui_to_api
from nodes.default_model import ensure_default_checkpoint
from nodes.sd.sampling import ModelSamplingEPS

CASES = Path(__file__).resolve().parents[1] / "conformance" / "data" / "cases"
U64 = 0xFFFFFFFFFFFFFFFF
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})


def F(default, lo=0.0, hi=100.0, step=0.01, **extra):
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, **extra})


def I(default, lo, hi):
    return ("INT", {"default": default, "min": lo, "max": hi})


SIGMA_RANGE = {"sigma_max": F(14.614642, hi=5000.0, round=False), "sigma_min": F(0.0291675, hi=5000.0, round=False)}

# ComfyUI 0.3.64's INPUT_TYPES (required inputs, in order), RETURN_TYPES and RETURN_NAMES.
COMFY_SPECS = {
    "SamplerCustom": ({"model": ("MODEL",), "add_noise": ("BOOLEAN", {"default": True}),
                       "noise_seed": ("INT", {"default": 0, "min": 0, "max": U64, "control_after_generate": True}),
                       "cfg": CFG, "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                       "sampler": ("SAMPLER",), "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)},
                      ["LATENT", "LATENT"], ["output", "denoised_output"]),
    "SamplerCustomAdvanced": ({"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                               "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)},
                              ["LATENT", "LATENT"], ["output", "denoised_output"]),
    "BasicScheduler": ({"model": ("MODEL",), "scheduler": ("COMBO", "schedulers"), "steps": I(20, 1, 10000),
                        "denoise": F(1.0, hi=1.0)}, ["SIGMAS"], None),
    "KarrasScheduler": ({"steps": I(20, 1, 10000), **SIGMA_RANGE, "rho": F(7.0, round=False)}, ["SIGMAS"], None),
    "ExponentialScheduler": ({"steps": I(20, 1, 10000), **SIGMA_RANGE}, ["SIGMAS"], None),
    "PolyexponentialScheduler": ({"steps": I(20, 1, 10000), **SIGMA_RANGE, "rho": F(1.0, round=False)}, ["SIGMAS"], None),
    "LaplaceScheduler": ({"steps": I(20, 1, 10000), **SIGMA_RANGE, "mu": F(0.0, -10.0, 10.0, 0.1, round=False),
                          "beta": F(0.5, 0.0, 10.0, 0.1, round=False)}, ["SIGMAS"], None),
    "VPScheduler": ({"steps": I(20, 1, 10000), "beta_d": F(19.9, hi=5000.0, round=False),
                     "beta_min": F(0.1, hi=5000.0, round=False), "eps_s": F(0.001, 0.0, 1.0, 0.0001, round=False)},
                    ["SIGMAS"], None),
    "BetaSamplingScheduler": ({"model": ("MODEL",), "steps": I(20, 1, 10000), "alpha": F(0.6, hi=50.0, round=False),
                               "beta": F(0.6, hi=50.0, round=False)}, ["SIGMAS"], None),
    "SDTurboScheduler": ({"model": ("MODEL",), "steps": I(1, 1, 10), "denoise": F(1.0, 0, 1.0)}, ["SIGMAS"], None),
    "AlignYourStepsScheduler": ({"model_type": ("COMBO", ["SD1", "SDXL", "SVD"]), "steps": I(10, 1, 10000),
                                 "denoise": F(1.0, hi=1.0)}, ["SIGMAS"], None),
    "GITSScheduler": ({"coeff": F(1.20, 0.80, 1.50, 0.05), "steps": I(10, 2, 1000), "denoise": F(1.0, hi=1.0)},
                      ["SIGMAS"], None),
    "SplitSigmas": ({"sigmas": ("SIGMAS",), "step": I(0, 0, 10000)}, ["SIGMAS", "SIGMAS"], ["high_sigmas", "low_sigmas"]),
    "SplitSigmasDenoise": ({"sigmas": ("SIGMAS",), "denoise": F(1.0, hi=1.0)}, ["SIGMAS", "SIGMAS"],
                           ["high_sigmas", "low_sigmas"]),
    "FlipSigmas": ({"sigmas": ("SIGMAS",)}, ["SIGMAS"], None),
    "SetFirstSigma": ({"sigmas": ("SIGMAS",), "sigma": F(136.0, 0.0, 20000.0, 0.001, round=False)}, ["SIGMAS"], None),
    "ExtendIntermediateSigmas": ({"sigmas": ("SIGMAS",), "steps": I(2, 1, 100),
                                  "start_at_sigma": F(-1.0, -1.0, 20000.0, round=False),
                                  "end_at_sigma": F(12.0, 0.0, 20000.0, round=False),
                                  "spacing": ("COMBO", ["linear", "cosine", "sine"])}, ["SIGMAS"], None),
    "SamplingPercentToSigma": ({"model": ("MODEL",), "sampling_percent": F(0.0, 0.0, 1.0, 0.0001),
                                "return_actual_sigma": ("BOOLEAN", {"default": False})}, ["FLOAT"], ["sigma_value"]),
    "KSamplerSelect": ({"sampler_name": ("COMBO", "samplers")}, ["SAMPLER"], None),
    "SamplerDPMPP_3M_SDE": ({"eta": F(1.0, round=False), "s_noise": F(1.0, round=False),
                             "noise_device": ("COMBO", ["gpu", "cpu"])}, ["SAMPLER"], None),
    "SamplerDPMPP_2M_SDE": ({"solver_type": ("COMBO", ["midpoint", "heun"]), "eta": F(1.0, round=False),
                             "s_noise": F(1.0, round=False), "noise_device": ("COMBO", ["gpu", "cpu"])}, ["SAMPLER"], None),
    "SamplerDPMPP_SDE": ({"eta": F(1.0, round=False), "s_noise": F(1.0, round=False), "r": F(0.5, round=False),
                          "noise_device": ("COMBO", ["gpu", "cpu"])}, ["SAMPLER"], None),
    "SamplerDPMPP_2S_Ancestral": ({"eta": F(1.0, round=False), "s_noise": F(1.0, round=False)}, ["SAMPLER"], None),
    "SamplerEulerAncestral": ({"eta": F(1.0, round=False), "s_noise": F(1.0, round=False)}, ["SAMPLER"], None),
    "SamplerEulerAncestralCFGPP": ({"eta": F(1.0, hi=1.0, round=False), "s_noise": F(1.0, hi=10.0, round=False)},
                                   ["SAMPLER"], None),
    "SamplerLMS": ({"order": I(4, 1, 100)}, ["SAMPLER"], None),
    "SamplerDPMAdaptative": ({"order": I(3, 2, 3), **{k: F(v, round=False) for k, v in (
        ("rtol", 0.05), ("atol", 0.0078), ("h_init", 0.05), ("pcoeff", 0.0), ("icoeff", 1.0), ("dcoeff", 0.0),
        ("accept_safety", 0.81), ("eta", 0.0), ("s_noise", 1.0))}}, ["SAMPLER"], None),
    "SamplerER_SDE": ({"solver_type": ("COMBO", ["ER-SDE", "Reverse-time SDE", "ODE"]), "max_stage": I(3, 1, 3),
                       "eta": F(1.0, round=False), "s_noise": F(1.0, round=False)}, ["SAMPLER"], None),
    "SamplerSASolver": ({"model": ("MODEL",), "eta": F(1.0, hi=10.0, round=False),
                         "sde_start_percent": F(0.2, 0.0, 1.0, 0.001), "sde_end_percent": F(0.8, 0.0, 1.0, 0.001),
                         "s_noise": F(1.0, round=False), "predictor_order": I(3, 1, 6), "corrector_order": I(4, 0, 6),
                         "use_pece": ("BOOLEAN", {}), "simple_order_2": ("BOOLEAN", {})}, ["SAMPLER"], None),
    "SamplerLCMUpscale": ({"scale_ratio": F(1.0, 0.1, 20.0), "scale_steps": ("INT", {"default": -1, "min": -1,
                                                                                      "max": 1000, "step": 1}),
                           "upscale_method": ("COMBO", ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"])},
                          ["SAMPLER"], None),
    "SamplerEulerCFGpp": ({"version": ("COMBO", ["regular", "alternative"])}, ["SAMPLER"], None),
    "CFGGuider": ({"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "cfg": CFG},
                  ["GUIDER"], None),
    "BasicGuider": ({"model": ("MODEL",), "conditioning": ("CONDITIONING",)}, ["GUIDER"], None),
    "DualCFGGuider": ({"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                       "negative": ("CONDITIONING",), "cfg_conds": CFG, "cfg_cond2_negative": CFG,
                       "style": ("COMBO", ["regular", "nested"])}, ["GUIDER"], None),
    "PerpNegGuider": ({"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                       "empty_conditioning": ("CONDITIONING",), "cfg": CFG, "neg_scale": F(1.0)}, ["GUIDER"], None),
    "RandomNoise": ({"noise_seed": ("INT", {"default": 0, "min": 0, "max": U64, "control_after_generate": True})},
                    ["NOISE"], None),
    "DisableNoise": ({}, ["NOISE"], None),
    "AddNoise": ({"model": ("MODEL",), "noise": ("NOISE",), "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)},
                 ["LATENT"], None),
}


@pytest.mark.parametrize("name", sorted(COMFY_SPECS))
def test_sockets_match_comfyui(library, name):
    from nodes.sd.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
    inputs, outputs, output_names = COMFY_SPECS[name]
    info = library.get(name).info()
    assert info["input_order"]["required"] == list(inputs) if inputs else "required" not in info["input_order"]
    for input_name, (kind, *rest) in inputs.items():
        ours = info["input"]["required"][input_name]
        if kind == "COMBO":
            choices = {"samplers": SAMPLER_NAMES, "schedulers": SCHEDULER_NAMES}[rest[0]] if isinstance(rest[0], str) \
                else rest[0]
            assert ours[0] == list(choices), input_name
        else:
            assert ours[0] == kind, input_name
            for key, value in (rest[0] if rest else {}).items():
                assert ours[1].get(key) == value, (input_name, key, ours[1].get(key), value)
    assert info["output"] == outputs
    if output_names:
        assert info["output_name"] == output_names


def ui_node(id, type, widgets, inputs=(), outputs=()):
    return {"id": id, "type": type, "mode": 0, "widgets_values": widgets,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs]}


def test_ui_file_converts_to_comfyuis_api_prompt(library):
    """sca_split_euler_ancestral_simple as ComfyUI's editor saves it (widgets in order, 'fixed' after
    each seed) converts to the API prompt ComfyUI itself ran for the conformance case."""
    links = [[1, 4, 0, 5, 0, "MODEL"], [2, 4, 0, 6, 0, "MODEL"], [3, 7, 0, 6, 1, "CONDITIONING"],
             [4, 8, 0, 6, 2, "CONDITIONING"], [5, 5, 0, 9, 0, "SIGMAS"], [6, 1, 0, 11, 0, "NOISE"],
             [7, 6, 0, 11, 1, "GUIDER"], [8, 10, 0, 11, 2, "SAMPLER"], [9, 9, 0, 11, 3, "SIGMAS"],
             [10, 3, 0, 11, 4, "LATENT"], [11, 2, 0, 12, 0, "NOISE"], [12, 6, 0, 12, 1, "GUIDER"],
             [13, 10, 0, 12, 2, "SAMPLER"], [14, 9, 1, 12, 3, "SIGMAS"], [15, 11, 0, 12, 4, "LATENT"],
             [16, 4, 1, 7, 0, "CLIP"], [17, 4, 1, 8, 0, "CLIP"]]
    nodes = [
        ui_node(1, "RandomNoise", [42, "fixed"], outputs=[("NOISE", "NOISE", [6])]),
        ui_node(2, "DisableNoise", [], outputs=[("NOISE", "NOISE", [11])]),
        ui_node(3, "EmptyLatentImage", [64, 64, 1], outputs=[("LATENT", "LATENT", [10])]),
        ui_node(4, "CheckpointLoaderSimple", ["nodegraph-demo.safetensors"]),
        ui_node(5, "BasicScheduler", ["simple", 6, 1.0], inputs=[("model", "MODEL", 1)]),
        ui_node(6, "CFGGuider", [5.0], inputs=[("model", "MODEL", 2), ("positive", "CONDITIONING", 3),
                                              ("negative", "CONDITIONING", 4)]),
        ui_node(7, "CLIPTextEncode", ["a red circle on a white background, center"], inputs=[("clip", "CLIP", 16)]),
        ui_node(8, "CLIPTextEncode", [""], inputs=[("clip", "CLIP", 17)]),
        ui_node(9, "SplitSigmas", [3], inputs=[("sigmas", "SIGMAS", 5)]),
        ui_node(10, "KSamplerSelect", ["euler_ancestral"]),
        ui_node(11, "SamplerCustomAdvanced", [], inputs=[("noise", "NOISE", 6), ("guider", "GUIDER", 7),
                                                         ("sampler", "SAMPLER", 8), ("sigmas", "SIGMAS", 9),
                                                         ("latent_image", "LATENT", 10)]),
        ui_node(12, "SamplerCustomAdvanced", [], inputs=[("noise", "NOISE", 11), ("guider", "GUIDER", 12),
                                                         ("sampler", "SAMPLER", 13), ("sigmas", "SIGMAS", 14),
                                                         ("latent_image", "LATENT", 15)]),
    ]
    api = ui_to_api({"nodes": nodes, "links": links, "version": 0.4}, library)
    case = json.loads((CASES / "sca_split_euler_ancestral_simple.json").read_text())
    widget_values = lambda node: {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
    ours = sorted((n["class_type"], json.dumps(widget_values(n), sort_keys=True)) for n in api.values())
    theirs = sorted((n["class_type"], json.dumps(widget_values(n), sort_keys=True)) for n in case.values()
                    if n["class_type"] not in ("SaveLatent", "SaveImage", "VAEDecode"))
    assert ours == theirs


# -- sigma nodes against hand-derived values -------------------------------------------------------
def call(library, name, **inputs):
    definition = library.get(name)
    return definition.call(definition.new_instance(), inputs)


def sigmas_of(result):
    return result[0] if isinstance(result, tuple) else result.values[0]


class FakeModel:
    """A MODEL stand-in for nodes that only read its noise schedule."""
    model_sampling = ModelSamplingEPS()


def test_split_flip_set_first_and_extend(library):
    sig = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = call(library, "SplitSigmas", sigmas=sig, step=2)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = call(library, "SplitSigmasDenoise", sigmas=sig, denoise=0.5)  # round(4 * 0.5) = 2 low steps
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    assert sigmas_of(call(library, "FlipSigmas", sigmas=sig)).tolist() == pytest.approx([0.0001, 1, 2, 5, 10])
    assert sigmas_of(call(library, "SetFirstSigma", sigmas=sig, sigma=7.5)).tolist() == [7.5, 5, 2, 1, 0]
    assert sig[0] == 10.0  # the input is not modified
    # steps=3 puts 2 extra sigmas at 1/3 and 2/3 of every step starting in [1, 5]
    ext = sigmas_of(call(library, "ExtendIntermediateSigmas", sigmas=sig, steps=3, start_at_sigma=5.0,
                         end_at_sigma=1.0, spacing="linear"))
    assert ext.tolist() == pytest.approx([10, 5, 4, 3, 2, 5 / 3, 4 / 3, 1, 2 / 3, 1 / 3, 0])
    sine = sigmas_of(call(library, "ExtendIntermediateSigmas", sigmas=torch.tensor([4.0, 0.0]), steps=2,
                          start_at_sigma=-1.0, end_at_sigma=0.0, spacing="sine"))
    assert sine.tolist() == pytest.approx([4.0, 4.0 - 4.0 * (1 - math.cos(math.pi / 4)), 0.0])


def test_parametric_schedules_by_hand(library):
    poly = sigmas_of(call(library, "PolyexponentialScheduler", steps=3, sigma_max=8.0, sigma_min=0.5, rho=2.0))
    # log sigma = log 0.5 + ramp^2 (log 8 - log 0.5), ramp = 1, 1/2, 0
    assert poly.tolist() == pytest.approx([8.0, 0.5 * 16 ** 0.25, 0.5, 0.0], rel=1e-6)
    vp = sigmas_of(call(library, "VPScheduler", steps=2, beta_d=19.9, beta_min=0.1, eps_s=0.001))
    expected = [math.sqrt(math.expm1(19.9 * t * t / 2 + 0.1 * t)) for t in (1.0, 0.001)] + [0.0]
    assert vp.tolist() == pytest.approx(expected, rel=1e-6)
    lap = sigmas_of(call(library, "LaplaceScheduler", steps=3, sigma_max=14.6, sigma_min=0.03, mu=0.0, beta=0.5))
    # x = 0, 1/2, 1: lambda = -0.5 log(1e-5) (e^5.76 = 316), 0, +0.5 log(1e-5) (0.0032); clamped; no final 0
    assert lap.tolist() == pytest.approx([14.6, 1.0, 0.03], rel=1e-6)


def test_model_schedules_by_hand(library, monkeypatch):
    ms = ModelSamplingEPS()
    turbo = sigmas_of(call(library, "SDTurboScheduler", model=FakeModel(), steps=3, denoise=0.5))
    assert turbo.tolist() == pytest.approx([float(ms.sigmas[t]) for t in (499, 399, 299)] + [0.0])
    ays = sigmas_of(call(library, "AlignYourStepsScheduler", model_type="SD1", steps=10, denoise=1.0))
    assert ays[0].item() == pytest.approx(14.6146412293) and ays[-1].item() == 0.0 and len(ays) == 11
    ays5 = sigmas_of(call(library, "AlignYourStepsScheduler", model_type="SD1", steps=5, denoise=1.0))
    table = ays.tolist()[:-1] + [0.0291671582]
    xs = np.linspace(0, 1, 11)
    by_hand = [math.exp(np.interp(x, xs, np.log(table[::-1]))) for x in np.linspace(0, 1, 6)][::-1]
    assert ays5.tolist() == pytest.approx(by_hand[:-1] + [0.0], rel=1e-6)
    gits = sigmas_of(call(library, "GITSScheduler", coeff=1.2, steps=2, denoise=1.0))
    assert len(gits) == 3 and gits[0].item() == pytest.approx(14.61464119) and gits[-1] == 0
    half = sigmas_of(call(library, "GITSScheduler", coeff=1.2, steps=10, denoise=0.5))
    assert len(half) == 6 and half[-1] == 0
    assert call(library, "SamplingPercentToSigma", model=FakeModel(), sampling_percent=0.0,
                return_actual_sigma=False)[0] == 999999999.9
    assert call(library, "SamplingPercentToSigma", model=FakeModel(), sampling_percent=0.0,
                return_actual_sigma=True)[0] == pytest.approx(14.6146, rel=1e-5)


# -- bad input --------------------------------------------------------------------------------------
def test_unknown_sampler_and_scheduler_names_name_the_node_and_suggest(library):
    prompt = {"1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sdee"}},
              "2": {"class_type": "BasicScheduler", "inputs": {"model": ["9", 0], "scheduler": "karas", "steps": 6,
                                                               "denoise": 1.0}},
              "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}}}
    with pytest.raises(ValidationError) as err:
        validate_prompt(prompt, library, targets=["1", "2"])
    text = str(err.value)
    assert "node 1 (KSamplerSelect), input 'sampler_name'" in text and "closest: 'dpmpp_2m_sde'" in text
    assert "node 2 (BasicScheduler), input 'scheduler'" in text and "closest: 'karras'" in text


def test_sampler_that_cannot_run_names_the_node_and_reason(layout, library):
    """DPM-Solver's adaptive steps with eta > 0 cannot sample towards more noise (FlipSigmas)."""
    ensure_default_checkpoint(layout)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nodegraph-demo.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras", "steps": 3,
                                                         "denoise": 1.0}},
        "5": {"class_type": "FlipSigmas", "inputs": {"sigmas": ["4", 0]}},
        "6": {"class_type": "SamplerDPMAdaptative", "inputs": {
            "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
            "accept_safety": 0.81, "eta": 0.5, "s_noise": 1.0}},
        "7": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 1, "cfg": 5.0, "positive": ["2", 0],
            "negative": ["2", 0], "sampler": ["6", 0], "sigmas": ["5", 0], "latent_image": ["3", 0]}},
    }
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, library, targets=["7"]))
    assert result.status == "error"
    error = result.error
    assert (error.node_id, error.node_type, error.input_name) == ("7", "SamplerCustom", "sampler")
    assert "dpm_adaptive cannot run here" in error.exception_message
    assert "eta must be 0" in error.exception_message


def test_gits_coefficient_off_the_table_names_the_input(library):
    from nodegraph import NodeInputError
    with pytest.raises(NodeInputError, match="coeff.*1.20"):
        call(library, "GITSScheduler", coeff=0.83, steps=6, denoise=1.0)


# -- the MODEL's sampling options act through custom sampling as through KSampler ------------------
class _PatchForTest:
    """A patch node for this test: v-prediction model sampling and a post-CFG hook on a MODEL clone."""
    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def patch(self, model):
        from nodes.sd.sampling.model_sampling import ModelSamplingDiscrete
        options = model.options.with_model_sampling(ModelSamplingDiscrete("v_prediction"), source="test")
        options = options.with_post_cfg(lambda step: step.denoised * 0.9 + step.uncond_denoised * 0.1, source="test")
        return (model.with_options(options),)


def test_model_options_act_in_custom_sampling_as_in_ksampler(layout, library):
    from tests.conformance.harness import capture_library
    ensure_default_checkpoint(layout)
    registry = capture_library(library)
    registry.register(_PatchForTest, "PatchForTest")
    base = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nodegraph-demo.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "PatchForTest", "inputs": {"model": ["1", 0]}},
    }
    ksampler = {**base, "9": {"class_type": "KSampler", "inputs": {
        "model": ["5", 0], "seed": 7, "steps": 4, "cfg": 5.0, "sampler_name": "dpmpp_2m_sde", "scheduler": "karras",
        "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}}
    custom = {**base,
              "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
              "7": {"class_type": "CFGGuider", "inputs": {"model": ["5", 0], "positive": ["2", 0],
                                                          "negative": ["3", 0], "cfg": 5.0}},
              "8": {"class_type": "BasicScheduler", "inputs": {"model": ["5", 0], "scheduler": "karras", "steps": 4,
                                                               "denoise": 1.0}},
              "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sde"}},
              "9": {"class_type": "SamplerCustomAdvanced", "inputs": {
                  "noise": ["6", 0], "guider": ["7", 0], "sampler": ["10", 0], "sigmas": ["8", 0],
                  "latent_image": ["4", 0]}}}
    unpatched = {**custom, "7": {**custom["7"], "inputs": {**custom["7"]["inputs"], "model": ["1", 0]}}}

    def latent(prompt):
        prompt = {**prompt, "99": {"class_type": "_CaptureLatent",
                                   "inputs": {"samples": ["9", 0], "filename_prefix": "latents/x"}}}
        result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))
        assert result.ok, result.error
        return result.outputs["99"]["capture"][0][1]

    via_ksampler, via_custom = latent(ksampler), latent(custom)
    assert torch.equal(via_ksampler, via_custom)
    assert not torch.allclose(via_custom, latent(unpatched), atol=1e-3)
