"""CLIP vision towers and style models: tiny stand-ins in the real file layouts (transformers' and OpenAI's
for CLIP vision, the T2I-Adapter style adapter's), generated into temporary folders and loaded through
the ordinary loader nodes. References: transformers' CLIPVisionModelWithProjection and CLIPImageProcessor
(built here from hand-written configs, independent of our shape detection), and a style adapter written out
with explicit attention math below."""
import math
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader, StyleModelApply, StyleModelLoader, unCLIPConditioning
from nodes.sd.clip_vision import ClipVisionOutput, clip_preprocess
from nodes.sd.tiny_adapters import make_tiny_style_model
from nodegraph import NodeInputError

CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=1, image_size=28,
              patch_size=14, projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)
ATOL = 1e-5  # float32, same operations in another order at most


def reference_tower(seed=0):
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**CONFIG)).eval()
    with torch.no_grad():  # non-trivial norms and embeddings, not the init's ones and zeros
        for name, p in model.named_parameters():
            if "norm" in name or "embedding" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def smooth_image(h, w, batch=1):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 7), 128 + 100 * np.cos(y / 5), 128 + 60 * np.sin((x + y) / 9)], -1)
    img = img.astype(np.uint8)
    return img, torch.from_numpy(np.stack([img] * batch)).float() / 255.0


@pytest.fixture
def tower_file(layout):
    model = reference_tower()
    path = layout.model_dirs("clip_vision")[0] / "tiny-vit.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path.name


def test_clip_vision_outputs_equal_transformers(tower_file):
    reference, name = tower_file
    (clip_vision,) = CLIPVisionLoader().run(name)
    img, image = smooth_image(28, 28, batch=2)
    (out,) = CLIPVisionEncode().run(clip_vision, image, "center")
    # 28x28 needs no resize: the processor only rescales and normalises the same 8-bit values
    pixels = CLIPImageProcessor(do_resize=False, do_center_crop=False)(images=[img, img], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = reference(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=ATOL, rtol=0)
    torch.testing.assert_close(out["last_hidden_state"], ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], atol=ATOL, rtol=0)
    assert out.image_embeds.shape == (2, 16) and out.last_hidden_state.shape == (2, 5, 32) and out.mm_projected is None


def test_preprocessing_matches_clip_image_processor_within_one_8bit_level():
    img, image = smooth_image(40, 56)
    ref = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})(
        images=img, return_tensors="pt")["pixel_values"]
    ours = clip_preprocess(image, 28)
    # torch's antialiased bicubic vs PIL's: one 8-bit level apart at most (1/255 / std ≈ 0.015 normalised)
    level = 1.0 / 255.0 / min(0.26862954, 0.26130258, 0.27577711)
    assert ours.shape == ref.shape == (1, 3, 28, 28)
    assert (ours - ref).abs().max() <= 1.01 * level and (ours - ref).abs().mean() < 0.1 * level


def test_crop_none_squashes_and_center_crops_the_middle():
    image = torch.zeros(1, 28, 56, 3)
    image[:, :, 14:42] = 1.0  # a white middle band half the width
    centre = clip_preprocess(image, 28, mean=(0, 0, 0), std=(1, 1, 1), crop=True)
    squashed = clip_preprocess(image, 28, mean=(0, 0, 0), std=(1, 1, 1), crop=False)
    assert torch.equal(centre, torch.ones(1, 3, 28, 28))            # the crop is the white band
    assert squashed[0, 0, 14, 0] == 0.0 and squashed[0, 0, 14, 14] == 1.0


def test_openai_layout_loads_to_the_same_tower(layout):
    reference = reference_tower(seed=3)
    sd = reference.state_dict()
    openai = {"visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
              "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
              "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
              "visual.proj": sd["visual_projection.weight"].t().contiguous()}
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for kind in ("weight", "bias"):
            openai[f"visual.{ours}.{kind}"] = sd[f"vision_model.{theirs}.{kind}"]
    for i in range(CONFIG["num_hidden_layers"]):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            openai[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                openai[dst + f"{a}.{kind}"] = sd[src + f"{b}.{kind}"]
    path = layout.model_dirs("clip_vision")[0] / "openai-layout.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in openai.items()}, str(path))
    (clip_vision,) = CLIPVisionLoader().run(path.name)
    _, image = smooth_image(28, 28)
    (out,) = CLIPVisionEncode().run(clip_vision, image, "center")
    with torch.no_grad():
        ref = reference(pixel_values=clip_preprocess(image, 28))
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=ATOL, rtol=0)


def test_wrong_kind_truncated_and_pickled_files_are_refused_naming_the_file(layout, tmp_path):
    folder = layout.model_dirs("clip_vision")[0]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(4, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)},
              str(folder / "a-lora.safetensors"))
    with pytest.raises(NodeInputError, match=r"clip_name.*a-lora\.safetensors.*looks like a LoRA"):
        CLIPVisionLoader().run("a-lora.safetensors")

    save_file({"vision_model.encoder.layers.0.layer_norm1.weight": torch.zeros(1000)}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(NodeInputError, match=r"clip_name.*cut\.safetensors.*truncated"):
        CLIPVisionLoader().run("cut.safetensors")

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "evil.pt").write_bytes(pickle.dumps({"vision_model.x": Payload()}))
    with pytest.raises(NodeInputError, match=r"clip_name.*evil\.pt"):
        CLIPVisionLoader().run("evil.pt")
    assert not marker.exists()


# -- style models ---------------------------------------------------------------------------------------
WIDTH, CONTEXT, TOKENS, LAYERS, HEADS = 32, 32, 4, 2, 8  # nodes.sd.tiny_adapters.make_tiny_style_model's


def reference_style(sd, hidden):
    """The T2I style adapter written out: append the queries, pre-norm CLIP blocks, take the queries."""
    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (WIDTH,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    x = ln(torch.cat([hidden, sd["style_embedding"].expand(hidden.shape[0], -1, -1)], 1), "ln_pre")
    for i in range(LAYERS):
        p = f"transformer_layes.{i}."
        h = ln(x, p + "ln_1")
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
        split = lambda t: t.view(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)  # noqa: E731
        weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(WIDTH // HEADS), -1)
        attn = (weights @ split(v)).transpose(1, 2).reshape(x.shape)
        x = x + attn @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        m = ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        x = x + (m * torch.sigmoid(1.702 * m)) @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return ln(x[:, -TOKENS:], "ln_post") @ sd["proj"]


@pytest.fixture
def style_file(layout):
    path = make_tiny_style_model(layout.model_dirs("style_models")[0] / "t2iadapter_style_tiny.safetensors",
                                 tokens=TOKENS, layers=LAYERS)
    return load_file(str(path)), path.name


def vision_output(batch=2, tokens=5):
    hidden = torch.randn(batch, tokens, WIDTH, generator=torch.Generator().manual_seed(9))
    return ClipVisionOutput(hidden, hidden * 0.5, torch.zeros(batch, 16))


def test_style_model_tokens_equal_the_written_out_adapter(style_file):
    sd, name = style_file
    (style_model,) = StyleModelLoader().run(name)
    out = vision_output()
    torch.testing.assert_close(style_model.get_cond(out), reference_style(sd, out.last_hidden_state), atol=ATOL, rtol=0)


def test_apply_style_model_appends_every_images_tokens(style_file):
    sd, name = style_file
    (style_model,) = StyleModelLoader().run(name)
    out = vision_output(batch=2)
    conditioning = [[torch.ones(1, 77, CONTEXT), {"pooled_output": torch.ones(1, CONTEXT)}]]
    expected = reference_style(sd, out.last_hidden_state).flatten(0, 1) * 0.5
    [(cond, options)] = StyleModelApply().run(conditioning, style_model, out, 0.5, "multiply")[0]
    assert cond.shape == (1, 77 + 2 * TOKENS, CONTEXT) and torch.equal(cond[0, :77], torch.ones(77, CONTEXT))
    torch.testing.assert_close(cond[0, 77:], expected, atol=ATOL, rtol=0)
    assert "attention_mask" not in options
    # attn_bias: tokens unscaled, a (77 + n + 1)² float16 mask with log(strength) on the new tokens' columns
    [(cond, options)] = StyleModelApply().run(conditioning, style_model, out, 0.5, "attn_bias")[0]
    torch.testing.assert_close(cond[0, 77:], expected * 2, atol=ATOL, rtol=0)
    mask, n = options["attention_mask"], 2 * TOKENS
    assert mask.shape == (1, 77 + n + 1, 77 + n + 1) and mask.dtype == torch.float16
    assert torch.all(mask[:, :77, 77:77 + n] == torch.log(torch.tensor(0.5)).half())
    assert torch.all(mask[:, :77, :77] == 0) and torch.all(mask[:, 77 + n:, 77:77 + n] == torch.log(torch.tensor(0.5)).half())


def test_style_model_refuses_a_vision_output_of_another_width(style_file):
    (style_model,) = StyleModelLoader().run(style_file[1])
    narrow = ClipVisionOutput(torch.zeros(1, 5, WIDTH + 1), torch.zeros(1, 5, WIDTH + 1), torch.zeros(1, 16))
    with pytest.raises(NodeInputError, match="clip_vision_output.*33 wide.*32-wide"):
        StyleModelApply().run([[torch.ones(1, 77, CONTEXT), {}]], style_model, narrow, 1.0, "multiply")


def test_style_model_loader_names_a_controlnet_file(layout):
    folder = layout.model_dirs("style_models")[0]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"control_model.zero_convs.0.0.weight": torch.zeros(4, 4, 1, 1)}, str(folder / "cn.safetensors"))
    with pytest.raises(NodeInputError, match=r"style_model_name.*cn\.safetensors.*looks like a ControlNet"):
        StyleModelLoader().run("cn.safetensors")


def test_unclip_conditioning_appends_entries_and_strength_zero_is_a_no_op():
    out = vision_output()
    conditioning = [[torch.ones(1, 77, 8), {}]]
    (first,) = unCLIPConditioning().run(conditioning, out, 0.8, 0.1)
    (second,) = unCLIPConditioning().run(first, out, -1.0, 0.0)
    assert [e["strength"] for e in second[0][1]["unclip_conditioning"]] == [0.8, -1.0]
    assert second[0][1]["unclip_conditioning"][0]["clip_vision_output"] is out
    assert unCLIPConditioning().run(conditioning, out, 0.0, 0.5)[0] is conditioning
    assert conditioning[0][1] == {}
