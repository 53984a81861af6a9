"""The node classes of this family declare ComfyUI 0.3.64's contract: class name, input names and types,
defaults, ranges, combo options, optional inputs, outputs, category, output-node flag. The expected
values are written out from ComfyUI 0.3.64's source (nodes.py, comfy_extras/nodes_upscale_model.py,
nodes_model_merging.py, nodes_lora_extract.py), so a drift on either side shows up here."""
import pytest

FILES = object()  # a combo whose options are files in a folder (compared by type only)
RATIO = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
MULTIPLIER = ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})
TEMPORAL = [("temporal_size", ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4})),
            ("temporal_overlap", ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4}))]
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]

# class -> (category, required [(name, spec)], optional [(name, spec)], outputs, output_node)
COMFYUI = {
    "CheckpointLoader": ("advanced/loaders", [("config_name", FILES), ("ckpt_name", FILES)], [],
                         ["MODEL", "CLIP", "VAE"], False),
    "UNETLoader": ("advanced/loaders", [("unet_name", FILES),
                                        ("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])],
                   [], ["MODEL"], False),
    "CLIPLoader": ("advanced/loaders", [("clip_name", FILES), ("type", CLIP_TYPES)], [("device", ["default", "cpu"])],
                   ["CLIP"], False),
    "VAELoader": ("loaders", [("vae_name", FILES)], [], ["VAE"], False),
    "UpscaleModelLoader": ("loaders", [("model_name", FILES)], [], ["UPSCALE_MODEL"], False),
    "ImageUpscaleWithModel": ("image/upscaling", [("upscale_model", ("UPSCALE_MODEL", {})), ("image", ("IMAGE", {}))],
                              [], ["IMAGE"], False),
    "VAEDecodeTiled": ("_for_testing", [("samples", ("LATENT", {})), ("vae", ("VAE", {})),
                                        ("tile_size", ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32})),
                                        ("overlap", ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32})),
                                        *TEMPORAL], [], ["IMAGE"], False),
    "VAEEncodeTiled": ("_for_testing", [("pixels", ("IMAGE", {})), ("vae", ("VAE", {})),
                                        ("tile_size", ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64})),
                                        ("overlap", ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32})),
                                        *TEMPORAL], [], ["LATENT"], False),
    "ModelMergeSimple": ("advanced/model_merging", [("model1", ("MODEL", {})), ("model2", ("MODEL", {})),
                                                    ("ratio", RATIO)], [], ["MODEL"], False),
    "ModelMergeBlocks": ("advanced/model_merging", [("model1", ("MODEL", {})), ("model2", ("MODEL", {})),
                                                    ("input", RATIO), ("middle", RATIO), ("out", RATIO)],
                         [], ["MODEL"], False),
    "ModelMergeSubtract": ("advanced/model_merging", [("model1", ("MODEL", {})), ("model2", ("MODEL", {})),
                                                      ("multiplier", MULTIPLIER)], [], ["MODEL"], False),
    "ModelMergeAdd": ("advanced/model_merging", [("model1", ("MODEL", {})), ("model2", ("MODEL", {}))], [],
                      ["MODEL"], False),
    "CLIPMergeSimple": ("advanced/model_merging", [("clip1", ("CLIP", {})), ("clip2", ("CLIP", {})),
                                                   ("ratio", RATIO)], [], ["CLIP"], False),
    "CLIPMergeSubtract": ("advanced/model_merging", [("clip1", ("CLIP", {})), ("clip2", ("CLIP", {})),
                                                     ("multiplier", MULTIPLIER)], [], ["CLIP"], False),
    "CLIPMergeAdd": ("advanced/model_merging", [("clip1", ("CLIP", {})), ("clip2", ("CLIP", {}))], [], ["CLIP"], False),
    "CheckpointSave": ("advanced/model_merging", [("model", ("MODEL", {})), ("clip", ("CLIP", {})), ("vae", ("VAE", {})),
                                                  ("filename_prefix", ("STRING", {"default": "checkpoints/ComfyUI"}))],
                       [], [], True),
    "ModelSave": ("advanced/model_merging", [("model", ("MODEL", {})),
                                             ("filename_prefix", ("STRING", {"default": "diffusion_models/ComfyUI"}))],
                  [], [], True),
    "CLIPSave": ("advanced/model_merging", [("clip", ("CLIP", {})),
                                            ("filename_prefix", ("STRING", {"default": "clip/ComfyUI"}))], [], [], True),
    "VAESave": ("advanced/model_merging", [("vae", ("VAE", {})),
                                           ("filename_prefix", ("STRING", {"default": "vae/ComfyUI_vae"}))], [], [], True),
    "LoraSave": ("_for_testing", [("filename_prefix", ("STRING", {"default": "loras/ComfyUI_extracted_lora"})),
                                  ("rank", ("INT", {"default": 8, "min": 1, "max": 4096, "step": 1})),
                                  ("lora_type", ["standard", "full_diff"]),
                                  ("bias_diff", ("BOOLEAN", {"default": True}))],
                 [("model_diff", ("MODEL", {})), ("text_encoder_diff", ("CLIP", {}))], [], True),
}


def _check_inputs(ours: dict, expected: list, where: str) -> None:
    assert list(ours) == [name for name, _ in expected], where
    for name, spec in expected:
        got = ours[name]
        if spec is FILES:
            assert isinstance(got[0], list), (where, name)
        elif isinstance(spec, list):
            assert got[0] == spec, (where, name)
        else:
            kind, options = spec
            assert got[0] == kind, (where, name)
            shown = got[1] if len(got) > 1 else {}
            assert {k: shown.get(k) for k in options} == options, (where, name, shown)


@pytest.mark.parametrize("name", sorted(COMFYUI))
def test_contract_is_comfyuis(library, name):
    category, required, optional, outputs, output_node = COMFYUI[name]
    definition = library.get(name)
    assert definition is not None, f"{name} is missing"
    info = definition.info()
    _check_inputs(info["input"]["required"], required, f"{name} required")
    _check_inputs(info["input"].get("optional", {}), optional, f"{name} optional")
    assert info["output"] == outputs
    assert (info["category"], info["output_node"]) == (category, output_node)
