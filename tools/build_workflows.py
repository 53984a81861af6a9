"""Writes the example workflows in workflows/ in ComfyUI's UI format (LiteGraph JSON, version 0.4).

Run `python tools/build_workflows.py` after changing a node's inputs; the JSON files are committed.
Widget values are positional, in the order of the node's widget inputs, with the seed's
"control after generate" value after the seed — exactly as ComfyUI's editor saves them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodegraph.registry import NodeRegistry  # noqa: E402

import nodes  # noqa: E402
from nodes.default_model import (DEFAULT_CHECKPOINT, DEMO_CANNY_THRESHOLDS, DEMO_CONTROLNET,  # noqa: E402
                                 DEMO_DEPTH_CONTROLNET, DEMO_DEPTH_MODEL, DEMO_DIR, DEMO_LORA)

REGISTRY = NodeRegistry()
nodes.register_nodes(REGISTRY)


class Workflow:
    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, type_: str, pos, widgets=None, title=None, size=None, **links):
        """links: input name -> (node dict, output slot)."""
        definition = REGISTRY.get(type_)
        specs = definition.specs()
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size or [315, 100]),
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets or [])}
        if title:
            node["title"] = title
        for spec in specs.declared():
            if not spec.is_widget:
                node["inputs"].append({"name": spec.name, "type": spec.type, "link": None})
        for slot, (kind, name) in enumerate(zip(definition.return_types, definition.return_names)):
            node["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
        self.nodes.append(node)
        for name, (source, slot) in links.items():
            self.link(source, slot, node, name)
        return node

    def link(self, source, slot, target, input_name):
        link_id = len(self.links) + 1
        kind = source["outputs"][slot]["type"]
        target_slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == input_name)
        target["inputs"][target_slot]["link"] = link_id
        source["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, source["id"], slot, target["id"], target_slot, kind])

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
                "version": 0.4}


# Every example runs on the embedded demo model (nodes/sd/demo): 64×64, prompts in its vocabulary (a colour,
# a shape, a background, a position), CFG 5 and an empty negative prompt, as it was trained and judged.
# controlnet_depth.json uses the demo depth estimator and depth ControlNet; upscale_model.json names an
# upscale model the user provides.
CFG = 5.0


def sd_base(w: Workflow, positive: str, negative: str = "", checkpoint: str = DEFAULT_CHECKPOINT):
    ckpt = w.add("CheckpointLoaderSimple", (30, 200), [checkpoint], size=[315, 98])
    pos = w.add("CLIPTextEncode", (400, 100), [positive], title="Positive prompt", clip=(ckpt, 1))
    neg = w.add("CLIPTextEncode", (400, 350), [negative], title="Negative prompt", clip=(ckpt, 1))
    return ckpt, pos, neg


def txt2img() -> dict:
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a red circle on a white background, center")
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    sampler = w.add("KSampler", (850, 200), [42, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1200, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1560, 200), ["nodegraph"], images=(image, 0))
    return w.to_json()


def img2img() -> dict:
    """input/example.png (a blue square, top left) redrawn purple: denoise 0.6 keeps the layout."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a purple square on a white background, top left")
    load = w.add("LoadImage", (30, 600), ["example.png", "image"])
    encoded = w.add("VAEEncode", (400, 600), pixels=(load, 0), vae=(ckpt, 2))
    sampler = w.add("KSampler", (850, 200), [7, "fixed", 20, CFG, "dpmpp_2m", "karras", 0.6],
                    model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(encoded, 0))
    image = w.add("VAEDecode", (1200, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1560, 200), ["img2img"], images=(image, 0))
    return w.to_json()


def inpaint() -> dict:
    """Repaints where input/example.png is transparent (the top-left region, where its blue square is)."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a yellow circle on a white background, top left")
    load = w.add("LoadImage", (30, 600), ["example.png", "image"])
    encoded = w.add("VAEEncode", (400, 600), pixels=(load, 0), vae=(ckpt, 2))
    masked = w.add("SetLatentNoiseMask", (650, 600), samples=(encoded, 0), mask=(load, 1))
    sampler = w.add("KSampler", (850, 200), [3, "fixed", 20, CFG, "euler_ancestral", "normal", 1.0],
                    model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(masked, 0))
    image = w.add("VAEDecode", (1200, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1560, 200), ["inpaint"], images=(image, 0))
    return w.to_json()


def hires_fix() -> dict:
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a yellow star on a black background, center")
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    first = w.add("KSampler", (850, 100), [11, "fixed", 12, CFG, "euler", "normal", 1.0], title="First pass",
                  model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    bigger = w.add("LatentUpscaleBy", (850, 450), ["nearest-exact", 1.5], samples=(first, 0))
    second = w.add("KSampler", (1200, 100), [11, "fixed", 12, CFG, "dpmpp_2m", "karras", 0.5], title="Hires pass",
                   model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(bigger, 0))
    image = w.add("VAEDecode", (1560, 100), vae=(ckpt, 2), samples=(second, 0))
    w.add("SaveImage", (1900, 100), ["hires"], images=(image, 0))
    return w.to_json()


def latent_upscale() -> dict:
    """Two-pass text-to-image: 64x64, then the latent upscaled to 128x128 (bislerp) and resampled at
    denoise 0.5, which adds detail at the new size while keeping the first pass's layout."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a green triangle on a white background, center")
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    first = w.add("KSampler", (850, 100), [5, "fixed", 12, CFG, "euler", "karras", 1.0], title="First pass",
                  model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    bigger = w.add("LatentUpscale", (850, 450), ["bislerp", 128, 128, "disabled"], samples=(first, 0))
    second = w.add("KSampler", (1200, 100), [5, "fixed", 12, CFG, "dpmpp_2m", "karras", 0.5], title="Second pass",
                   model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(bigger, 0))
    image = w.add("VAEDecode", (1560, 100), vae=(ckpt, 2), samples=(second, 0))
    w.add("SaveImage", (1900, 100), ["latent_upscale"], images=(image, 0))
    return w.to_json()


def noisy_latent_composition() -> dict:
    """ComfyUI's noisy latent composition: each subject is sampled alone for the first steps of a shared
    schedule (KSamplerAdvanced, leftover noise kept), the noisy latents are pasted side by side onto a
    wide noisy background (LatentComposite, feathered seam), and one sampler finishes the remaining
    steps of the whole picture. The demo model draws one shape per picture, so the finishing pass is
    told what each half holds (ConditioningSetArea) rather than given one prompt for both."""
    w = Workflow()
    ckpt = w.add("CheckpointLoaderSimple", (30, 200), [DEFAULT_CHECKPOINT], size=[315, 98])
    neg = w.add("CLIPTextEncode", (400, 1300), [""], title="Negative prompt", clip=(ckpt, 1))
    steps, switch = 16, 8
    subjects = [("a red circle on a white background, center", 0), ("a blue square on a white background, center", 64)]

    def first_steps(prompt, y, width, seed, title):
        pos = w.add("CLIPTextEncode", (400, y), [prompt], title=f"{title} prompt", clip=(ckpt, 1))
        empty = w.add("EmptyLatentImage", (400, y + 200), [width, 64, 1])
        sampler = w.add("KSamplerAdvanced", (850, y), ["enable", seed, "fixed", steps, CFG, "euler", "normal", 0,
                                                        switch, "enable"], title=f"{title}: first {switch} steps",
                        size=[315, 334], model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0),
                        latent_image=(empty, 0))
        return pos, sampler

    _, canvas = first_steps("a white background", 0, 128, 1, "Background")
    areas = []
    for k, (prompt, x) in enumerate(subjects):
        pos, noisy = first_steps(prompt, 400 * (k + 1), 64, 2 + k, "Left subject" if k == 0 else "Right subject")
        canvas = w.add("LatentComposite", (1200, 300 + 200 * k), [x, 0, 16 if x else 0],
                       samples_to=(canvas, 0), samples_from=(noisy, 0))
        areas.append(w.add("ConditioningSetArea", (1200, 800 + 200 * k), [64, 64, x, 0, 1.0], conditioning=(pos, 0)))
    both = w.add("ConditioningCombine", (1200, 1200), conditioning_1=(areas[0], 0), conditioning_2=(areas[1], 0))
    finish = w.add("KSamplerAdvanced", (1550, 300), ["disable", 0, "fixed", steps, CFG, "euler", "normal", switch,
                                                      10000, "disable"], title="Finish the remaining steps",
                   size=[315, 334], model=(ckpt, 0), positive=(both, 0), negative=(neg, 0), latent_image=(canvas, 0))
    image = w.add("VAEDecode", (1900, 300), vae=(ckpt, 2), samples=(finish, 0))
    w.add("SaveImage", (2200, 300), ["noisy_latent_composition"], images=(image, 0))
    return w.to_json()


def _lora(prompt: str, strength: float, prefix: str) -> dict:
    """The demo LoRA (shapes drawn as outlines) on the demo model."""
    w = Workflow()
    ckpt = w.add("CheckpointLoaderSimple", (30, 200), [DEFAULT_CHECKPOINT], size=[315, 98])
    styled = w.add("LoraLoader", (30, 400), [DEMO_LORA, strength, strength], size=[315, 126],
                   model=(ckpt, 0), clip=(ckpt, 1))
    pos = w.add("CLIPTextEncode", (400, 100), [prompt], title="Positive prompt", clip=(styled, 1))
    neg = w.add("CLIPTextEncode", (400, 350), [""], title="Negative prompt", clip=(styled, 1))
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    sampler = w.add("KSampler", (850, 200), [42, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(styled, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1200, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1560, 200), [prefix], images=(image, 0))
    return w.to_json()


def lora() -> dict:
    return _lora("a red circle on a white background, top right", 0.8, "lora")


def demo_lora() -> dict:  # the setting the LoRA was judged with: strength 1
    return _lora("a blue star on a white background, center", 1.0, "demo_lora")


def _controlnet(hint_node: str, hint_widgets: list, prompt: str, prefix: str, window: list, *,
                checkpoint: str = DEFAULT_CHECKPOINT, controlnet: str = DEMO_CONTROLNET) -> dict:
    """Text-to-image steered by a ControlNet whose hint is `hint_node` run on input/example.png."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, prompt, checkpoint=checkpoint)
    load = w.add("LoadImage", (30, 600), ["example.png", "image"])
    hint = w.add(hint_node, (400, 850), hint_widgets, image=(load, 0))
    net = w.add("ControlNetLoader", (400, 1050), [controlnet], size=[315, 58])
    applied = w.add("ControlNetApplyAdvanced", (850, 600), [1.0, *window], size=[315, 186],
                    positive=(pos, 0), negative=(neg, 0), control_net=(net, 0), image=(hint, 0))
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    sampler = w.add("KSampler", (1200, 200), [42, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(applied, 0), negative=(applied, 1), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1550, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1900, 200), [prefix], images=(image, 0))
    return w.to_json()


def controlnet_canny() -> dict:
    return _controlnet("Canny", list(DEMO_CANNY_THRESHOLDS), "a red square on a white background, top left",
                       "controlnet_canny", [0.0, 1.0])


def demo_controlnet() -> dict:
    # The prompt names no position: the edges of input/example.png (a square, top left) place the shape.
    return _controlnet("Canny", list(DEMO_CANNY_THRESHOLDS), "a green square on a white background",
                       "demo_controlnet", [0.0, 1.0])


def controlnet_depth() -> dict:
    # The demo depth estimator's map of input/example.png (a square, top left) places the shape; the prompt
    # names no position.
    return _controlnet("DepthEstimation", [DEMO_DEPTH_MODEL, 0], "a purple square on a gray background",
                       "controlnet_depth", [0.0, 1.0], controlnet=DEMO_DEPTH_CONTROLNET)


# The upscale example names the file ComfyUI's own examples use; no upscale model ships with nodegraph, so
# put one in models/upscale_models (the tests run it on a tiny generated ESRGAN of that name).
UPSCALE_MODEL = "RealESRGAN_x4plus.pth"


def upscale_model() -> dict:
    """Text-to-image, then the decoded picture upscaled 4x by an upscale model (ESRGAN family)."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a green triangle on a gray background, center")
    latent = w.add("EmptyLatentImage", (400, 600), [64, 64, 1])
    sampler = w.add("KSampler", (850, 200), [8, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1200, 200), vae=(ckpt, 2), samples=(sampler, 0))
    upscaler = w.add("UpscaleModelLoader", (1200, 400), [UPSCALE_MODEL], size=[315, 58])
    bigger = w.add("ImageUpscaleWithModel", (1560, 300), upscale_model=(upscaler, 0), image=(image, 0))
    w.add("SaveImage", (1900, 300), ["upscaled"], images=(bigger, 0))
    return w.to_json()


def model_merge() -> dict:
    """The demo model merged half-and-half with itself carrying the demo LoRA (so, the LoRA at half
    strength, baked in), sampled, and saved as a new checkpoint in output/checkpoints/."""
    w = Workflow()
    ckpt = w.add("CheckpointLoaderSimple", (30, 200), [DEFAULT_CHECKPOINT], size=[315, 98])
    styled = w.add("LoraLoader", (30, 400), [DEMO_LORA, 1.0, 1.0], size=[315, 126], model=(ckpt, 0), clip=(ckpt, 1))
    model = w.add("ModelMergeSimple", (400, 100), [0.5], title="Merge models", model1=(ckpt, 0), model2=(styled, 0))
    clip = w.add("CLIPMergeSimple", (400, 300), [0.5], title="Merge text encoders", clip1=(ckpt, 1),
                 clip2=(styled, 1))
    pos = w.add("CLIPTextEncode", (750, 100), ["a blue star on a white background, center"], title="Positive prompt",
                clip=(clip, 0))
    neg = w.add("CLIPTextEncode", (750, 350), [""], title="Negative prompt", clip=(clip, 0))
    latent = w.add("EmptyLatentImage", (750, 600), [64, 64, 1])
    sampler = w.add("KSampler", (1100, 200), [42, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(model, 0), positive=(pos, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1450, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1800, 200), ["merged"], images=(image, 0))
    w.add("CheckpointSave", (750, 800), ["checkpoints/nodegraph-demo-merged"], model=(model, 0), clip=(clip, 0),
          vae=(ckpt, 2))
    return w.to_json()


def area_composition() -> dict:
    """A 128×64 picture composed of two 64×64 areas, each with its own prompt (ConditioningSetArea), over a
    global prompt at a lower strength: the demo model draws one shape per area."""
    w = Workflow()
    ckpt, whole, neg = sd_base(w, "a white background")
    left_text = w.add("CLIPTextEncode", (30, 450), ["a red circle on a white background, center"], title="Left",
                      clip=(ckpt, 1))
    right_text = w.add("CLIPTextEncode", (30, 700), ["a blue square on a white background, center"], title="Right",
                       clip=(ckpt, 1))
    left = w.add("ConditioningSetArea", (400, 450), [64, 64, 0, 0, 1.0], conditioning=(left_text, 0))
    right = w.add("ConditioningSetArea", (400, 700), [64, 64, 64, 0, 1.0], conditioning=(right_text, 0))
    background = w.add("ConditioningSetAreaStrength", (400, 950), [0.3], conditioning=(whole, 0))
    both = w.add("ConditioningCombine", (750, 450), conditioning_1=(left, 0), conditioning_2=(right, 0))
    positive = w.add("ConditioningCombine", (750, 650), conditioning_1=(both, 0), conditioning_2=(background, 0))
    latent = w.add("EmptyLatentImage", (750, 850), [128, 64, 1])
    sampler = w.add("KSampler", (1100, 200), [42, "fixed", 20, CFG, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(positive, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1450, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1800, 200), ["area_composition"], images=(image, 0))
    return w.to_json()


# The T2I-Adapter and GLIGEN examples are for a real SD1.5 checkpoint: no adapter or GLIGEN is trained for
# the demo model. They name the files ComfyUI's examples use; put them in models/checkpoints,
# models/t2i_adapter and models/gligen (the tests run both on tiny generated models of these names).
SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
T2I_DEPTH_ADAPTER = "t2iadapter_depth_sd15v2.pth"
GLIGEN_MODEL = "gligen_sd14_textbox_pruned.safetensors"


def t2i_adapter() -> dict:
    """A depth T2I-Adapter (loaded with the ControlNet loader, applied with Apply ControlNet) steering the
    layout by the demo depth estimator's map of input/example.png."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a red box on a table", checkpoint=SD15_CHECKPOINT)
    load = w.add("LoadImage", (30, 600), ["example.png", "image"])
    depth = w.add("DepthEstimation", (30, 950), [DEMO_DEPTH_MODEL, 0], image=(load, 0))
    adapter = w.add("ControlNetLoader", (400, 850), [T2I_DEPTH_ADAPTER], size=[315, 58])
    applied = w.add("ControlNetApplyAdvanced", (850, 600), [0.8, 0.0, 1.0], size=[315, 186],
                    positive=(pos, 0), negative=(neg, 0), control_net=(adapter, 0), image=(depth, 0))
    latent = w.add("EmptyLatentImage", (400, 600), [512, 512, 1])
    sampler = w.add("KSampler", (1200, 200), [42, "fixed", 20, 7.0, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(applied, 0), negative=(applied, 1), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1550, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1900, 200), ["t2i_adapter"], images=(image, 0))
    return w.to_json()


def gligen() -> dict:
    """GLIGEN: two phrases, each placed in a box (GLIGENTextBoxApply), on top of the prompt."""
    w = Workflow()
    ckpt, pos, neg = sd_base(w, "a cat and a ball on the grass", checkpoint=SD15_CHECKPOINT)
    model = w.add("GLIGENLoader", (30, 600), [GLIGEN_MODEL], size=[315, 58])
    cat = w.add("GLIGENTextBoxApply", (400, 600), ["a cat", 256, 384, 0, 128], size=[315, 230], title="Box: a cat",
                conditioning_to=(pos, 0), clip=(ckpt, 1), gligen_textbox_model=(model, 0))
    ball = w.add("GLIGENTextBoxApply", (750, 600), ["a ball", 192, 192, 320, 192], size=[315, 230],
                 title="Box: a ball", conditioning_to=(cat, 0), clip=(ckpt, 1), gligen_textbox_model=(model, 0))
    latent = w.add("EmptyLatentImage", (750, 350), [512, 512, 1])
    sampler = w.add("KSampler", (1100, 200), [42, "fixed", 20, 7.0, "euler", "normal", 1.0], size=[315, 262],
                    model=(ckpt, 0), positive=(ball, 0), negative=(neg, 0), latent_image=(latent, 0))
    image = w.add("VAEDecode", (1450, 200), vae=(ckpt, 2), samples=(sampler, 0))
    w.add("SaveImage", (1800, 200), ["gligen"], images=(image, 0))
    return w.to_json()


WORKFLOWS = {"txt2img.json": txt2img, "img2img.json": img2img, "inpaint.json": inpaint, "hires_fix.json": hires_fix}
WORKFLOWS.update({"lora.json": lora, "controlnet_canny.json": controlnet_canny})
WORKFLOWS.update({"demo_lora.json": demo_lora, "demo_controlnet.json": demo_controlnet})
WORKFLOWS.update({"upscale_model.json": upscale_model, "model_merge.json": model_merge})
WORKFLOWS.update({"area_composition.json": area_composition})
WORKFLOWS.update({"latent_upscale.json": latent_upscale, "noisy_latent_composition.json": noisy_latent_composition})
if (DEMO_DIR / DEMO_DEPTH_CONTROLNET).exists():  # only once a depth ControlNet that passes its judge ships
    WORKFLOWS["controlnet_depth.json"] = controlnet_depth
WORKFLOWS.update({"t2i_adapter.json": t2i_adapter, "gligen.json": gligen})  # for a real SD1.5 (see above)

if __name__ == "__main__":
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        (out / name).write_text(json.dumps(build(), indent=1) + "\n")
        print("wrote", out / name)
    # the editor opens on the text-to-image example
    (ROOT / "web" / "src" / "default_workflow.json").write_text(json.dumps(txt2img(), indent=1) + "\n")
    print("wrote", ROOT / "web" / "src" / "default_workflow.json")
