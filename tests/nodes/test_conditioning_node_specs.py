"""The conditioning / adapter node classes of issue 12 against ComfyUI 0.3.64's declarations (nodes.py,
comfy_extras/nodes_ip2p.py, nodes_cond.py, nodes_hypernetwork.py), written out here from its source:
input names in order, types, defaults, ranges, steps, combo options, outputs and categories."""
import pytest

COMBO = "COMBO"  # a file list: only the kind is checked, the files depend on the folders
F = "FLOAT"

# class: (required inputs [(name, type, default, min, max, step) | (name, [options]) | (name, type)],
#         outputs [(type, name)], category)
FACTS = {
    "ConditioningAverage": ([("conditioning_to", "CONDITIONING"), ("conditioning_from", "CONDITIONING"),
                             ("conditioning_to_strength", F, 1.0, 0.0, 1.0, 0.01)], ["CONDITIONING"], "conditioning"),
    "ConditioningConcat": ([("conditioning_to", "CONDITIONING"), ("conditioning_from", "CONDITIONING")],
                           ["CONDITIONING"], "conditioning"),
    "ConditioningSetAreaPercentage": ([("conditioning", "CONDITIONING"), ("width", F, 1.0, 0, 1.0, 0.01),
                                       ("height", F, 1.0, 0, 1.0, 0.01), ("x", F, 0, 0, 1.0, 0.01),
                                       ("y", F, 0, 0, 1.0, 0.01), ("strength", F, 1.0, 0.0, 10.0, 0.01)],
                                      ["CONDITIONING"], "conditioning"),
    "ConditioningSetAreaStrength": ([("conditioning", "CONDITIONING"), ("strength", F, 1.0, 0.0, 10.0, 0.01)],
                                    ["CONDITIONING"], "conditioning"),
    "ConditioningSetMask": ([("conditioning", "CONDITIONING"), ("mask", "MASK"), ("strength", F, 1.0, 0.0, 10.0, 0.01),
                             ("set_cond_area", ["default", "mask bounds"])], ["CONDITIONING"], "conditioning"),
    "ConditioningZeroOut": ([("conditioning", "CONDITIONING")], ["CONDITIONING"], "advanced/conditioning"),
    "ConditioningSetTimestepRange": ([("conditioning", "CONDITIONING"), ("start", F, 0.0, 0.0, 1.0, 0.001),
                                      ("end", F, 1.0, 0.0, 1.0, 0.001)], ["CONDITIONING"], "advanced/conditioning"),
    "InpaintModelConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                                  ("pixels", "IMAGE"), ("mask", "MASK"), ("noise_mask", "BOOLEAN", True)],
                                 [("CONDITIONING", "positive"), ("CONDITIONING", "negative"), ("LATENT", "latent")],
                                 "conditioning/inpaint"),
    "InstructPixToPixConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                                      ("pixels", "IMAGE")],
                                     [("CONDITIONING", "positive"), ("CONDITIONING", "negative"), ("LATENT", "latent")],
                                     "conditioning/instructpix2pix"),
    "CLIPTextEncodeControlnet": ([("clip", "CLIP"), ("conditioning", "CONDITIONING"), ("text", "STRING")],
                                 ["CONDITIONING"], "_for_testing/conditioning"),
    "unCLIPConditioning": ([("conditioning", "CONDITIONING"), ("clip_vision_output", "CLIP_VISION_OUTPUT"),
                            ("strength", F, 1.0, -10.0, 10.0, 0.01), ("noise_augmentation", F, 0.0, 0.0, 1.0, 0.01)],
                           ["CONDITIONING"], "conditioning"),
    "StyleModelLoader": ([("style_model_name", COMBO)], ["STYLE_MODEL"], "loaders"),
    "StyleModelApply": ([("conditioning", "CONDITIONING"), ("style_model", "STYLE_MODEL"),
                         ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("strength", F, 1.0, 0.0, 10.0, 0.001),
                         ("strength_type", ["multiply", "attn_bias"])], ["CONDITIONING"], "conditioning/style_model"),
    "CLIPVisionLoader": ([("clip_name", COMBO)], ["CLIP_VISION"], "loaders"),
    "CLIPVisionEncode": ([("clip_vision", "CLIP_VISION"), ("image", "IMAGE"), ("crop", ["center", "none"])],
                         ["CLIP_VISION_OUTPUT"], "conditioning"),
    "DiffControlNetLoader": ([("model", "MODEL"), ("control_net_name", COMBO)], ["CONTROL_NET"], "loaders"),
    "HypernetworkLoader": ([("model", "MODEL"), ("hypernetwork_name", COMBO), ("strength", F, 1.0, -10.0, 10.0, 0.01)],
                           ["MODEL"], "loaders"),
    "GLIGENLoader": ([("gligen_name", COMBO)], ["GLIGEN"], "loaders"),
    "GLIGENTextBoxApply": ([("conditioning_to", "CONDITIONING"), ("clip", "CLIP"), ("gligen_textbox_model", "GLIGEN"),
                            ("text", "STRING"), ("width", "INT", 64, 8, 16384, 8), ("height", "INT", 64, 8, 16384, 8),
                            ("x", "INT", 0, 0, 16384, 8), ("y", "INT", 0, 0, 16384, 8)],
                           ["CONDITIONING"], "conditioning/gligen"),
}


def differences(info: dict, facts: tuple) -> list[str]:
    required, outputs, category = facts
    problems = []
    ours = info["input"]["required"]
    if list(ours) != [spec[0] for spec in required]:
        problems.append(f"required inputs {list(ours)} != {[spec[0] for spec in required]}")
    for spec in required:
        name, rest = spec[0], spec[1:]
        if name not in ours:
            continue
        kind, options = ours[name][0], (ours[name][1] if len(ours[name]) > 1 else {})
        if isinstance(rest[0], list):
            if kind != rest[0]:
                problems.append(f"{name}: options {kind} != {rest[0]}")
        elif rest[0] == COMBO:
            if not isinstance(kind, list):
                problems.append(f"{name}: {kind} is not a combo")
        else:
            if kind != rest[0]:
                problems.append(f"{name}: type {kind} != {rest[0]}")
            for key, want in zip(("default", "min", "max", "step"), rest[1:]):
                if options.get(key) != want:
                    problems.append(f"{name}: {key} {options.get(key)!r} != {want!r}")
    want_types = [o if isinstance(o, str) else o[0] for o in outputs]
    if info["output"] != want_types:
        problems.append(f"outputs {info['output']} != {want_types}")
    names = [o[1] for o in outputs if not isinstance(o, str)]
    if names and info["output_name"] != names:
        problems.append(f"output names {info['output_name']} != {names}")
    if info["category"] != category:
        problems.append(f"category {info['category']!r} != {category!r}")
    return problems


@pytest.mark.parametrize("name", sorted(FACTS))
def test_node_matches_comfyui_0_3_64(library, layout, name):
    definition = library.get(name)
    assert definition is not None, f"{name} is not registered"
    assert differences(definition.info(), FACTS[name]) == []


def test_text_inputs_are_multiline_prompts(library, layout):
    for name, text in (("CLIPTextEncodeControlnet", "text"), ("GLIGENTextBoxApply", "text")):
        options = library.get(name).info()["input"]["required"][text][1]
        assert options.get("multiline") is True and options.get("dynamicPrompts") is True
