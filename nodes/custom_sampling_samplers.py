"""Custom sampling's SAMPLER nodes: KSamplerSelect (any sampler by name, default options) and the
option nodes that set a sampler's eta, noise scale, order, solver type, ... (ComfyUI's names, inputs and
defaults). A SAMPLER value is a nodes.sd.sampling.SamplerSpec."""
from __future__ import annotations

from nodegraph import Boolean, Combo, Float, Input, Int, Node, Output

from .image_ops import upscale
from .sampling import model_sampling_of
from .sd.sampling import SAMPLER_NAMES, SamplerSpec
from .sd.sampling.sa_solver import tau_window

CATEGORY = "sampling/custom_sampling/samplers"


def _float(name, default, max=100.0, **options):
    return Float(name, default, min=0.0, max=max, step=0.01, round=False, **options)


def _noise_device():
    return Combo("noise_device", ["gpu", "cpu"])


class KSamplerSelect(Node):
    """A sampler by name, with its default options (as KSampler runs it)."""
    category = CATEGORY
    inputs = (Combo("sampler_name", SAMPLER_NAMES),)
    outputs = (Output("SAMPLER"),)

    def run(self, sampler_name):
        return (SamplerSpec.named(sampler_name),)


class SamplerEulerAncestral(Node):
    category = CATEGORY
    inputs = (_float("eta", 1.0), _float("s_noise", 1.0))
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise):
        return (SamplerSpec("euler_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerEulerAncestralCFGPP(Node):
    display_name = "SamplerEulerAncestralCFG++"
    category = CATEGORY
    inputs = (_float("eta", 1.0, max=1.0), _float("s_noise", 1.0, max=10.0))
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise):
        return (SamplerSpec("euler_ancestral_cfg_pp", {"eta": eta, "s_noise": s_noise}),)


class SamplerEulerCFGpp(Node):
    """Euler CFG++: 'regular' is euler_cfg_pp; 'alternative' steps along (x - 2 D_cfg + D_uncond) / sigma."""
    display_name = "SamplerEulerCFG++"
    category = "_for_testing"
    experimental = True
    inputs = (Combo("version", ["regular", "alternative"]),)
    outputs = (Output("SAMPLER"),)

    def run(self, version):
        return (SamplerSpec("euler_pp" if version == "alternative" else "euler_cfg_pp"),)


class SamplerLMS(Node):
    category = CATEGORY
    inputs = (Int("order", 4, min=1, max=100),)
    outputs = (Output("SAMPLER"),)

    def run(self, order):
        return (SamplerSpec("lms", {"order": order}),)


class SamplerDPMPP_3M_SDE(Node):
    category = CATEGORY
    inputs = (_float("eta", 1.0), _float("s_noise", 1.0), _noise_device())
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise, noise_device):
        name = "dpmpp_3m_sde" if noise_device == "cpu" else "dpmpp_3m_sde_gpu"
        return (SamplerSpec(name, {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_2M_SDE(Node):
    category = CATEGORY
    inputs = (Combo("solver_type", ["midpoint", "heun"]), _float("eta", 1.0), _float("s_noise", 1.0), _noise_device())
    outputs = (Output("SAMPLER"),)

    def run(self, solver_type, eta, s_noise, noise_device):
        name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return (SamplerSpec(name, {"eta": eta, "s_noise": s_noise, "solver_type": solver_type}),)


class SamplerDPMPP_SDE(Node):
    category = CATEGORY
    inputs = (_float("eta", 1.0), _float("s_noise", 1.0), _float("r", 0.5), _noise_device())
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise, r, noise_device):
        name = "dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu"
        return (SamplerSpec(name, {"eta": eta, "s_noise": s_noise, "r": r}),)


class SamplerDPMPP_2S_Ancestral(Node):
    category = CATEGORY
    inputs = (_float("eta", 1.0), _float("s_noise", 1.0))
    outputs = (Output("SAMPLER"),)

    def run(self, eta, s_noise):
        return (SamplerSpec("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMAdaptative(Node):
    """DPM-Solver with adaptive steps (its name keeps ComfyUI's spelling)."""
    category = CATEGORY
    inputs = (Int("order", 3, min=2, max=3), _float("rtol", 0.05), _float("atol", 0.0078), _float("h_init", 0.05),
              _float("pcoeff", 0.0), _float("icoeff", 1.0), _float("dcoeff", 0.0), _float("accept_safety", 0.81),
              _float("eta", 0.0), _float("s_noise", 1.0))
    outputs = (Output("SAMPLER"),)

    def run(self, **options):
        return (SamplerSpec("dpm_adaptive", options),)


class SamplerER_SDE(Node):
    """ER-SDE solver: its own noise scale ('ER-SDE'), a reverse-time SDE of strength eta, or the ODE."""
    category = CATEGORY
    inputs = (Combo("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"]), Int("max_stage", 3, min=1, max=3),
              _float("eta", 1.0, tooltip="Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to "
                     "deterministic ODE. This setting doesn't apply to ER-SDE solver type."),
              _float("s_noise", 1.0))
    outputs = (Output("SAMPLER"),)

    def run(self, solver_type, max_stage, eta, s_noise):
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0, 0
        scaler = None if solver_type == "ER-SDE" else _power_scaler(eta + 1)
        return (SamplerSpec("er_sde", {"s_noise": s_noise, "noise_scaler": scaler, "max_stage": max_stage}),)


def _power_scaler(power):
    return lambda x: x ** power


class SamplerSASolver(Node):
    """SA-Solver, stochastic (tau = eta) between sde_start_percent and sde_end_percent of sampling."""
    category = CATEGORY
    inputs = (Input("model", "MODEL"), Float("eta", 1.0, min=0.0, max=10.0, step=0.01, round=False),
              Float("sde_start_percent", 0.2, min=0.0, max=1.0, step=0.001),
              Float("sde_end_percent", 0.8, min=0.0, max=1.0, step=0.001), _float("s_noise", 1.0),
              Int("predictor_order", 3, min=1, max=6), Int("corrector_order", 4, min=0, max=6),
              Boolean("use_pece"), Boolean("simple_order_2"))
    outputs = (Output("SAMPLER"),)

    def run(self, model, eta, sde_start_percent, sde_end_percent, s_noise, predictor_order, corrector_order,
            use_pece, simple_order_2):
        ms = model_sampling_of(model)
        tau = tau_window(ms.percent_to_sigma(sde_start_percent), ms.percent_to_sigma(sde_end_percent), eta)
        return (SamplerSpec("sa_solver", {"tau_func": tau, "s_noise": s_noise, "predictor_order": predictor_order,
                                          "corrector_order": corrector_order, "use_pece": use_pece,
                                          "simple_order_2": simple_order_2}),)


class SamplerLCMUpscale(Node):
    """LCM sampling that enlarges the latent by scale_ratio over the first scale_steps steps
    (-1: half of them)."""
    category = CATEGORY
    inputs = (Float("scale_ratio", 1.0, min=0.1, max=20.0, step=0.01), Int("scale_steps", -1, min=-1, max=1000, step=1),
              Combo("upscale_method", ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"]))
    outputs = (Output("SAMPLER"),)

    def run(self, scale_ratio, scale_steps, upscale_method):
        def resize(x, width, height):
            return upscale(x, width, height, upscale_method)
        return (SamplerSpec("lcm_upscale", {"total_upscale": scale_ratio, "resize": resize,
                                            "upscale_steps": None if scale_steps < 0 else scale_steps}),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    KSamplerSelect, SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerEulerCFGpp, SamplerLMS,
    SamplerDPMPP_3M_SDE, SamplerDPMPP_2M_SDE, SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative,
    SamplerER_SDE, SamplerSASolver, SamplerLCMUpscale)}
