"""Model merging as patches on shared weights, checked against hand-computed tensors; the savers write
files that reload through our loaders with identical tensors and the original key layout; LoraSave's
truncated SVD reproduces a difference (full rank) or a LoRA (its own rank)."""
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_DIR, DEMO_LORA
from nodes.sd.lora_extract import low_rank_factors

DEMO = DEMO_DIR / DEFAULT_CHECKPOINT
OTHER = "perturbed.safetensors"
UNET, CLIP, VAE = "model.diffusion_model.", "cond_stage_model.transformer.", "first_stage_model."


@pytest.fixture(scope="module")
def files():
    """The demo checkpoint (A) and a perturbed copy (B), as fp32 tensors keyed as in the files."""
    a = {k: v.float() for k, v in load_file(str(DEMO)).items()}
    g = torch.Generator().manual_seed(0)
    b = {k: v + 0.1 * v.std().nan_to_num(0.01).clamp(min=1e-3) * torch.randn(v.shape, generator=g) for k, v in a.items()}
    return a, b


@pytest.fixture
def models(layout, library, files):
    folder = layout.models[0] / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO, folder / DEFAULT_CHECKPOINT)
    save_file(files[1], str(folder / OTHER))
    load = library.get("CheckpointLoaderSimple").cls().run
    return load(ckpt_name=DEFAULT_CHECKPOINT), load(ckpt_name=OTHER)


def node(library, name, **inputs):
    return library.get(name).cls().run(**inputs)


def part(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def assert_weights(patcher, expected: dict, *, rtol=1e-6):
    """Every expected weight, computed aside and through the module itself after patching."""
    assert expected
    for key, want in expected.items():
        got = patcher.weight(key)
        scale = max(1.0, float(want.abs().max()))
        assert (got.double() - want.double()).abs().max() <= rtol * scale, key
    module = patcher.patch_model()
    params = module.state_dict()
    for key, want in list(expected.items())[:40]:
        assert torch.allclose(params[key].double(), want.double(), rtol=0, atol=rtol * max(1.0, float(want.abs().max())))


# -- merges ----------------------------------------------------------------------------------------

def test_merge_simple_is_ratio_a_plus_rest_b_and_copies_nothing(library, models, files):
    (a, _, _), (b, _, _) = models
    (m,) = node(library, "ModelMergeSimple", model1=a, model2=b, ratio=0.3)
    assert m.model is a.model and m.patches_size() == 0  # a's module, no tensors of its own
    A, B = part(files[0], UNET), part(files[1], UNET)
    assert_weights(m, {k: 0.3 * A[k] + 0.7 * B[k] for k in A})
    assert a.patched_keys() == set()  # the inputs are untouched


def test_merge_blocks_uses_the_ratio_of_the_longest_matching_name(library, models, files):
    (a, _, _), (b, _, _) = models
    (m,) = node(library, "ModelMergeBlocks", model1=a, model2=b, input=0.2, middle=0.5, out=0.9)
    A, B = part(files[0], UNET), part(files[1], UNET)

    def ratio(key):  # by hand: ComfyUI's prefixes, the first ratio for everything else
        if key.startswith("middle"):
            return 0.5
        if key.startswith("out"):  # out.* and output_blocks.*
            return 0.9
        return 0.2  # input_blocks.* and time_embed.*

    assert {ratio(k) for k in A} == {0.2, 0.5, 0.9}
    assert_weights(m, {k: ratio(k) * A[k] + (1 - ratio(k)) * B[k] for k in A})


def test_add_subtract_and_add_difference(library, models, files):
    (a, _, _), (b, _, _) = models
    A, B = part(files[0], UNET), part(files[1], UNET)
    (added,) = node(library, "ModelMergeAdd", model1=a, model2=b)
    assert_weights(added, {k: A[k] + B[k] for k in A})
    (difference,) = node(library, "ModelMergeSubtract", model1=b, model2=a, multiplier=2.0)
    assert_weights(difference, {k: 2.0 * (B[k] - A[k]) for k in A}, rtol=1e-5)
    (half,) = node(library, "ModelMergeSubtract", model1=b, model2=a, multiplier=0.5)
    (back,) = node(library, "ModelMergeAdd", model1=a, model2=half)  # a + (b − a)/2: merges of merges
    assert_weights(back, {k: A[k] + 0.5 * (B[k] - A[k]) for k in A}, rtol=1e-5)


def test_merge_with_a_lora_model_uses_its_patched_weights(library, models, layout):
    (a, clip_a, _), (b, _, _) = models
    (layout.models[0] / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_DIR / DEMO_LORA, layout.models[0] / "loras" / DEMO_LORA)
    b_lora, _ = node(library, "LoraLoader", model=b, clip=clip_a, lora_name=DEMO_LORA, strength_model=1.0,
                     strength_clip=1.0)
    (m,) = node(library, "ModelMergeSimple", model1=a, model2=b_lora, ratio=0.25)
    patched = sorted(b_lora.patched_keys())
    assert patched
    expected = {k: 0.25 * a.weight(k) + 0.75 * b_lora.weight(k) for k in patched}
    assert_weights(m, expected, rtol=1e-5)
    assert not torch.equal(b_lora.weight(patched[0]), b.weight(patched[0]))


def test_clip_merges(library, models, files):
    (_, ca, _), (_, cb, _) = models
    A, B = part(files[0], CLIP), part(files[1], CLIP)
    (simple,) = node(library, "CLIPMergeSimple", clip1=ca, clip2=cb, ratio=0.4)
    assert_weights(simple.patcher, {k: 0.4 * A[k] + 0.6 * B[k] for k in A})
    (sub,) = node(library, "CLIPMergeSubtract", clip1=cb, clip2=ca, multiplier=1.5)
    assert_weights(sub.patcher, {k: 1.5 * (B[k] - A[k]) for k in A}, rtol=1e-5)
    (add,) = node(library, "CLIPMergeAdd", clip1=ca, clip2=cb)
    assert_weights(add.patcher, {k: A[k] + B[k] for k in A})
    # The merged text encoder is what encodes: the conditioning moves with the ratio.
    prompt = "a red circle on a white background, center"
    at_1 = node(library, "CLIPMergeSimple", clip1=ca, clip2=cb, ratio=1.0)[0].encode(prompt)[0]
    assert torch.equal(at_1, ca.encode(prompt)[0])
    assert not torch.allclose(simple.encode(prompt)[0], at_1, atol=1e-3)


# -- saving ----------------------------------------------------------------------------------------

def saved_file(layout, result):
    (entry,) = result.ui["models"]
    return layout.output / entry["subfolder"] / entry["filename"]


def test_checkpoint_save_reloads_with_identical_tensors_and_layout(layout, library, models):
    (a, ca, va), (b, cb, _) = models
    (merged,) = node(library, "ModelMergeSimple", model1=a, model2=b, ratio=0.6)
    (clip,) = node(library, "CLIPMergeSimple", clip1=ca, clip2=cb, ratio=0.6)
    workflow = {"nodes": [], "links": [], "version": 0.4}
    result = node(library, "CheckpointSave", model=merged, clip=clip, vae=va, filename_prefix="checkpoints/merged",
                  prompt={"1": {"class_type": "CheckpointSave"}}, extra_pnginfo={"workflow": workflow})
    path = saved_file(layout, result)
    assert path == layout.output / "checkpoints" / "merged_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    with safe_open(str(DEMO), "pt") as f:
        assert keys == set(f.keys())  # the original layout, key for key
    assert json.loads(metadata["workflow"]) == workflow and json.loads(metadata["prompt"])["1"]
    assert metadata["modelspec.predict_key"] == "epsilon"

    target = layout.models[0] / "checkpoints" / "reloaded.safetensors"
    shutil.copyfile(path, target)
    m2, c2, v2 = node(library, "CheckpointLoaderSimple", ckpt_name="reloaded.safetensors")
    for key, tensor in m2.model.state_dict().items():
        assert torch.equal(tensor, merged.weight(key).to(tensor.dtype)), key
    for key, tensor in c2.text_model.state_dict().items():
        assert torch.equal(tensor, clip.patcher.weight(key).to(tensor.dtype)), key
    for key, tensor in v2.model.state_dict().items():
        assert torch.equal(tensor, va.model.state_dict()[key]), key
    # the counter moves on, as ComfyUI's
    again = node(library, "CheckpointSave", model=merged, clip=clip, vae=va, filename_prefix="checkpoints/merged")
    assert saved_file(layout, again).name == "merged_00002_.safetensors"


def test_model_clip_and_vae_saves_reload_through_their_loaders(layout, library, models):
    (a, ca, va), (b, cb, _) = models
    (merged,) = node(library, "ModelMergeAdd", model1=a, model2=b)
    (clip,) = node(library, "CLIPMergeSubtract", clip1=cb, clip2=ca, multiplier=1.0)
    models_dir = layout.models[0]

    unet_file = saved_file(layout, node(library, "ModelSave", model=merged, filename_prefix="diffusion_models/m"))
    assert unet_file.name == "m_00001_.safetensors"
    with safe_open(str(unet_file), "pt") as f:
        assert all(k.startswith(UNET) for k in f.keys())
    (models_dir / "diffusion_models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(unet_file, models_dir / "diffusion_models" / unet_file.name)
    (unet,) = node(library, "UNETLoader", unet_name=unet_file.name, weight_dtype="default")
    for key, tensor in unet.model.state_dict().items():
        assert torch.equal(tensor, merged.weight(key)), key

    clip_file = saved_file(layout, node(library, "CLIPSave", clip=clip, filename_prefix="clip/c"))
    assert clip_file.name == "c_clip_l_00001_.safetensors"
    with safe_open(str(clip_file), "pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys()) and f.metadata()["format"] == "pt"
    (models_dir / "clip").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip_file, models_dir / "clip" / clip_file.name)
    (reloaded,) = node(library, "CLIPLoader", clip_name=clip_file.name, type="stable_diffusion")
    for key, tensor in reloaded.text_model.state_dict().items():
        assert torch.equal(tensor, clip.patcher.weight(key)), key

    vae_file = saved_file(layout, node(library, "VAESave", vae=va, filename_prefix="vae/v"))
    with safe_open(str(vae_file), "pt") as f:
        assert "decoder.conv_out.weight" in set(f.keys())
    (models_dir / "vae").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vae_file, models_dir / "vae" / vae_file.name)
    (vae,) = node(library, "VAELoader", vae_name=vae_file.name)
    for key, tensor in vae.model.state_dict().items():
        assert torch.equal(tensor, va.model.state_dict()[key]), key


def test_saving_a_patched_model_leaves_another_clones_weights_out(layout, library, models):
    """The module holds whichever clone ran last; the saved file has this clone's weights."""
    (a, ca, va), (b, _, _) = models
    (merged,) = node(library, "ModelMergeSimple", model1=a, model2=b, ratio=0.5)
    merged.patch_model()  # the shared module now holds merged weights
    path = saved_file(layout, node(library, "ModelSave", model=a, filename_prefix="plain"))
    sd = load_file(str(path))
    for key, tensor in a.model.state_dict().items():
        assert torch.equal(sd[UNET + key], a.weight(key)), key  # a's originals, not the merge


def test_a_prefix_that_leaves_the_output_folder_is_refused(layout, library, models):
    (_, _, va), _ = models
    from nodegraph import NodeInputError
    with pytest.raises(NodeInputError) as info:
        node(library, "VAESave", vae=va, filename_prefix="../../escape")
    assert info.value.input_name == "filename_prefix"


# -- LoraSave --------------------------------------------------------------------------------------

def test_truncated_svd_by_hand():
    diff = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    up, down = low_rank_factors(diff, 1)
    torch.testing.assert_close(up @ down, torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
    conv = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    up, down = low_rank_factors(conv, 27)
    assert up.shape == (4, 4, 1, 1) and down.shape == (4, 3, 3, 3)  # rank capped at min(4, 27)
    torch.testing.assert_close((up.flatten(1) @ down.flatten(1)).reshape(conv.shape), conv, rtol=1e-5, atol=1e-5)


def load_lora_onto(library, layout, path, model, clip):
    (layout.models[0] / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, layout.models[0] / "loras" / path.name)
    return node(library, "LoraLoader", model=model, clip=clip, lora_name=path.name, strength_model=1.0,
                strength_clip=1.0)


def test_a_full_rank_lora_reproduces_the_difference(layout, library, models):
    (a, ca, _), (b, cb, _) = models
    (diff,) = node(library, "ModelMergeSubtract", model1=b, model2=a, multiplier=1.0)
    (clip_diff,) = node(library, "CLIPMergeSubtract", clip1=cb, clip2=ca, multiplier=1.0)
    result = node(library, "LoraSave", filename_prefix="loras/extracted", rank=4096, lora_type="standard",
                  bias_diff=True, model_diff=diff, text_encoder_diff=clip_diff)
    path = saved_file(layout, result)
    lora = load_file(str(path))
    assert any(k.startswith("lora_unet_down_blocks_0_") and k.endswith(".lora_up.weight") for k in lora)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_") for k in lora)
    assert any(k.endswith(".diff_b") for k in lora) and any(k.endswith(".diff") for k in lora)

    model, clip = load_lora_onto(library, layout, path, a, ca)
    # fp16 factors (as ComfyUI stores them): within a few fp16 roundings of the change itself
    for key in a.model.state_dict():
        want = b.weight(key)
        change = (want - a.weight(key)).abs().max()
        assert (model.weight(key) - want).abs().max() <= 4e-3 * change + 1e-6, key
    for key, tensor in cb.text_model.state_dict().items():
        if key.endswith(".position_ids"):
            continue
        want = tensor.float()
        change = (want - ca.text_model.state_dict()[key].float()).abs().max()
        assert (clip.patcher.weight(key) - want).abs().max() <= 4e-3 * change + 1e-6, key


def test_a_rank_4_lora_is_recovered_at_rank_4(layout, library, models):
    (a, ca, _), _ = models
    (layout.models[0] / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_DIR / DEMO_LORA, layout.models[0] / "loras" / DEMO_LORA)
    with_lora, _ = node(library, "LoraLoader", model=a, clip=ca, lora_name=DEMO_LORA, strength_model=1.0,
                        strength_clip=0.0)
    (diff,) = node(library, "ModelMergeSubtract", model1=with_lora, model2=a, multiplier=1.0)
    path = saved_file(layout, node(library, "LoraSave", filename_prefix="loras/r4", rank=4, lora_type="standard",
                                   bias_diff=False, model_diff=diff))
    lora = load_file(str(path))
    assert {v.shape[0] for k, v in lora.items() if k.endswith("lora_down.weight")} == {4}
    assert len([k for k in lora if k.endswith(".lora_up.weight")]) == len(with_lora.patched_keys())
    model, _ = load_lora_onto(library, layout, path, a, ca)
    for key in with_lora.patched_keys():
        want = with_lora.weight(key)
        change = (want - a.weight(key)).abs().max()
        assert change > 0 and (model.weight(key) - want).abs().max() <= 4e-3 * change, key


def test_lora_save_full_diff_and_nothing_connected(layout, library, models):
    (a, _, _), (b, _, _) = models
    (diff,) = node(library, "ModelMergeSubtract", model1=b, model2=a, multiplier=1.0)
    path = saved_file(layout, node(library, "LoraSave", filename_prefix="loras/full", rank=8, lora_type="full_diff",
                                   bias_diff=False, model_diff=diff))
    lora = load_file(str(path))
    assert lora and all(k.endswith(".diff") for k in lora)
    key = "input_blocks.1.0.in_layers.2.weight"
    base = "lora_unet_down_blocks_0_resnets_0_conv1"
    torch.testing.assert_close(lora[base + ".diff"].float(), diff.weight(key), rtol=1e-3, atol=1e-4)
    assert node(library, "LoraSave", filename_prefix="loras/none", rank=8, lora_type="standard",
                bias_diff=True).ui == {}
    assert not list((layout.output / "loras").glob("none*"))
