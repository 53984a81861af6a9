"""CheckpointLoader (with an LDM config), UNETLoader, CLIPLoader and VAELoader on SD1 component files in
the layouts ComfyUI accepts: the same weights through a component loader give the same model as the
checkpoint loader, a diffusers UNet computes what diffusers computes, and files of the wrong kind are
refused naming the node, the input, the file and what the file is."""
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_DIR

from .loader_checks import assert_blames, run_one

DEMO = DEMO_DIR / DEFAULT_CHECKPOINT
PROMPT = "a red circle on a white background, center"


@pytest.fixture(scope="module")
def demo_sd():
    return load_file(str(DEMO))


def put(layout, kind, name, tensors):
    folder = layout.models[0] / kind
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / name))
    return folder / name


def part(sd, prefix, new_prefix=""):
    return {new_prefix + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def node(library, name, **inputs):
    return library.get(name).cls().run(**inputs)


def checkpoint(layout, library):
    (layout.models[0] / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO, layout.models[0] / "checkpoints" / DEFAULT_CHECKPOINT)
    return node(library, "CheckpointLoaderSimple", ckpt_name=DEFAULT_CHECKPOINT)


def same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# -- UNETLoader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout_name", ["bare", "checkpoint-prefix", "whole-checkpoint"])
def test_unet_files_in_original_layouts_give_the_checkpoints_unet(layout, library, demo_sd, layout_name):
    name = f"{layout_name}.safetensors"
    if layout_name == "bare":
        put(layout, "unet", name, part(demo_sd, "model.diffusion_model."))
    elif layout_name == "checkpoint-prefix":  # what ModelSave writes
        put(layout, "diffusion_models", name, part(demo_sd, "model.diffusion_model.", "model.diffusion_model."))
    else:
        put(layout, "unet", name, demo_sd)
    assert name in library.get("UNETLoader").info()["input"]["required"]["unet_name"][0]
    (model,) = node(library, "UNETLoader", unet_name=name, weight_dtype="default")
    reference = checkpoint(layout, library)[0]
    same_weights(model.model, reference.model)


def test_a_diffusers_unet_computes_what_diffusers_computes(layout, library):
    from diffusers import UNet2DConditionModel

    from nodes.sd.tiny import TINY_UNET_CONFIG
    from tests.sd.test_unet import diffusers_config

    torch.manual_seed(0)
    reference = UNet2DConditionModel(**diffusers_config(TINY_UNET_CONFIG)).eval()
    with torch.no_grad():
        for p in reference.parameters():  # diffusers zero-initialises output layers: make every weight count
            p.add_(0.05 * torch.randn_like(p))
    put(layout, "unet", "diffusion_pytorch_model.safetensors", reference.state_dict())
    (model,) = node(library, "UNETLoader", unet_name="diffusion_pytorch_model.safetensors", weight_dtype="default")
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 700.0]), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=ctx).sample
        actual = model.model(x, t, ctx)
    assert expected.abs().mean() > 0.05
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_fp8_weight_dtype_rounds_every_weight_through_fp8(layout, library, demo_sd):
    put(layout, "unet", "u.safetensors", part(demo_sd, "model.diffusion_model."))
    (default,) = node(library, "UNETLoader", unet_name="u.safetensors", weight_dtype="default")
    (fp8,) = node(library, "UNETLoader", unet_name="u.safetensors", weight_dtype="fp8_e4m3fn")
    (e5m2,) = node(library, "UNETLoader", unet_name="u.safetensors", weight_dtype="fp8_e5m2")
    for key, weight in default.model.state_dict().items():
        torch.testing.assert_close(fp8.model.state_dict()[key], weight.to(torch.float8_e4m3fn).to(weight.dtype),
                                   rtol=0, atol=0)
        torch.testing.assert_close(e5m2.model.state_dict()[key], weight.to(torch.float8_e5m2).to(weight.dtype),
                                   rtol=0, atol=0)
    w = default.model.state_dict()["input_blocks.0.0.weight"]
    assert not torch.equal(fp8.model.state_dict()["input_blocks.0.0.weight"], w)  # the rounding did something


def test_an_sdxl_unet_is_refused_saying_sdxl(layout, library, demo_sd):
    unet = part(demo_sd, "model.diffusion_model.", "model.diffusion_model.")
    unet["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(1280, 2816)
    put(layout, "unet", "sdxl_base.safetensors", unet)
    assert_blames(run_one(library, "UNETLoader", unet_name="sdxl_base.safetensors", weight_dtype="default"),
                  "UNETLoader", "unet_name", "sdxl_base.safetensors", "SDXL")


def test_a_vae_given_to_the_unet_loader_says_it_is_a_vae(layout, library, demo_sd):
    put(layout, "unet", "vae.safetensors", part(demo_sd, "first_stage_model."))
    assert_blames(run_one(library, "UNETLoader", unet_name="vae.safetensors", weight_dtype="default"),
                  "UNETLoader", "unet_name", "vae.safetensors", "VAE")


# -- CLIPLoader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, folder", [
    ("text_model.", "text_encoders"),                                # transformers / CLIPSave
    ("cond_stage_model.transformer.text_model.", "clip"),           # a checkpoint's text encoder
    ("clip_l.transformer.text_model.", "text_encoders"),             # ComfyUI's in-memory names
])
def test_clip_files_encode_as_the_checkpoints_clip(layout, library, demo_sd, prefix, folder):
    put(layout, folder, "te.safetensors", part(demo_sd, "cond_stage_model.transformer.text_model.", prefix))
    (clip,) = node(library, "CLIPLoader", clip_name="te.safetensors", type="stable_diffusion")
    reference = checkpoint(layout, library)[1]
    cond, pooled = clip.encode(PROMPT)
    ref_cond, ref_pooled = reference.encode(PROMPT)
    assert torch.equal(cond, ref_cond) and torch.equal(pooled, ref_pooled)


def test_clip_on_the_cpu_option(layout, library, demo_sd):
    put(layout, "clip", "te.safetensors", part(demo_sd, "cond_stage_model.transformer."))
    (clip,) = node(library, "CLIPLoader", clip_name="te.safetensors", type="stable_diffusion", device="cpu")
    assert next(clip.text_model.parameters()).device.type == "cpu"


def test_clip_types_of_other_model_families_are_refused(layout, library, demo_sd):
    put(layout, "clip", "te.safetensors", part(demo_sd, "cond_stage_model.transformer."))
    assert_blames(run_one(library, "CLIPLoader", clip_name="te.safetensors", type="sd3"),
                  "CLIPLoader", "type", "stable_diffusion")


@pytest.mark.parametrize("tensors, says", [
    ({"text_model.embeddings.token_embedding.weight": torch.zeros(10, 1280)}, "SDXL"),
    ({"transformer.resblocks.0.attn.in_proj_weight": torch.zeros(12, 4)}, "OpenCLIP"),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)}, "T5"),
    ({"lora_unet_x.lora_up.weight": torch.zeros(4, 4)}, "LoRA"),
])
def test_wrong_text_encoders_are_named(layout, library, tensors, says):
    put(layout, "clip", "wrong.safetensors", tensors)
    assert_blames(run_one(library, "CLIPLoader", clip_name="wrong.safetensors", type="stable_diffusion"),
                  "CLIPLoader", "clip_name", "wrong.safetensors", says)


# -- VAELoader -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_vae_files_give_the_checkpoints_vae(layout, library, demo_sd, prefix):
    put(layout, "vae", "v.safetensors", part(demo_sd, "first_stage_model.", prefix))
    (vae,) = node(library, "VAELoader", vae_name="v.safetensors")
    same_weights(vae.model, checkpoint(layout, library)[2].model)


# -- CheckpointLoader ------------------------------------------------------------------------------

def test_checkpoint_loader_lists_the_bundled_sd1_configs_and_the_users(layout, library):
    (layout.models[0] / "configs").mkdir(parents=True)
    (layout.models[0] / "configs" / "mine.yaml").write_text("model: {params: {}}\n")
    choices = library.get("CheckpointLoader").info()["input"]["required"]["config_name"][0]
    assert {"v1-inference.yaml", "v1-inference_clip_skip_2.yaml", "v1-inpainting-inference.yaml",
            "mine.yaml"} <= set(choices)


def test_checkpoint_loader_with_v1_inference_equals_the_simple_loader(layout, library):
    simple = checkpoint(layout, library)
    model, clip, vae = node(library, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name=DEFAULT_CHECKPOINT)
    assert model.model is simple[0].model and vae is simple[2]
    assert torch.equal(clip.encode(PROMPT)[0], simple[1].encode(PROMPT)[0])


def test_a_clip_skip_config_sets_the_text_encoder_layer(layout, library):
    simple = checkpoint(layout, library)
    _, clip, _ = node(library, "CheckpointLoader", config_name="v1-inference_clip_skip_2.yaml",
                      ckpt_name=DEFAULT_CHECKPOINT)
    (skipped,) = node(library, "CLIPSetLastLayer", clip=simple[1], stop_at_clip_layer=-2)
    assert torch.equal(clip.encode(PROMPT)[0], skipped.encode(PROMPT)[0])
    assert not torch.equal(clip.encode(PROMPT)[0], simple[1].encode(PROMPT)[0])


@pytest.mark.parametrize("text, says", [
    ("model:\n  params:\n    parameterization: \"v\"\n", "v-prediction"),
    ("just: [unbalanced\n", "not an LDM model config"),
    ("- a list\n", "not an LDM model config"),
])
def test_bad_configs_are_refused_naming_the_config(layout, library, text, says):
    checkpoint(layout, library)
    (layout.models[0] / "configs").mkdir(parents=True)
    (layout.models[0] / "configs" / "bad.yaml").write_text(text)
    assert_blames(run_one(library, "CheckpointLoader", config_name="bad.yaml", ckpt_name=DEFAULT_CHECKPOINT),
                  "CheckpointLoader", "config_name", "bad.yaml", says)


def test_a_ckpt_checkpoint_loads_through_weights_only_torch_load(layout, library, demo_sd):
    (layout.models[0] / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": dict(demo_sd), "global_step": 1234}, layout.models[0] / "checkpoints" / "old.ckpt")
    model, clip, vae = node(library, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="old.ckpt")
    simple = checkpoint(layout, library)
    same_weights(model.model, simple[0].model)
    same_weights(vae.model, simple[2].model)
