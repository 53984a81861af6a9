"""Key maps and apply_lora: every naming scheme lands on the same weight; wrong files fail with the file's name."""
import copy
import logging

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from nodes.sd.diffusers_keys import unet_diffusers_to_ldm
from nodes.sd.lora import LoraMatchError, apply_lora
from nodes.sd.lora_keys import (clip_lora_key_map, unet_diffusers_to_ldm_from_keys, unet_lora_key_map,
                                unet_lora_key_map_from_keys)
from nodes.sd.patcher import ModelPatcher
from nodes.sd.tiny import TINY_UNET_CONFIG, tiny_clip_config_kwargs
from nodes.sd.unet import SD15_UNET_CONFIG, UNetModel

torch.manual_seed(0)


def sd15_keys():
    with torch.device("meta"):
        return [k for k, _ in UNetModel(SD15_UNET_CONFIG).named_parameters()]


class FakeCLIP:
    """The slice of the CLIP socket type that LoRA loading uses: text_model, patcher, clone()."""

    def __init__(self, text_model):
        self.text_model, self.patcher = text_model, None

    def clone(self):
        other = copy.copy(self)
        other.patcher = self.patcher.clone() if self.patcher is not None else None
        return other


@pytest.fixture
def unet():
    return ModelPatcher(UNetModel(TINY_UNET_CONFIG))


@pytest.fixture
def clip():
    return FakeCLIP(CLIPTextModel(CLIPTextConfig(**tiny_clip_config_kwargs())))


def lora_pair(out_features, in_shape, rank=2):
    up = torch.randn(out_features, rank, *([1, 1] if len(in_shape) == 3 else []))
    return up, torch.randn(rank, *in_shape)


def test_diffusers_to_ldm_map_read_from_keys_agrees_with_the_config_map_and_diffusers():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    keys = sd15_keys()
    ours = unet_diffusers_to_ldm_from_keys(keys)
    assert ours == unet_diffusers_to_ldm(SD15_UNET_CONFIG)
    # diffusers' own LDM → diffusers converter, fed one numbered tensor per key, gives the same names.
    diffusers_config = dict(in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                            block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8,
                            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
    converted = convert_ldm_unet_checkpoint(
        {f"model.diffusion_model.{k}": torch.tensor([float(i)]) for i, k in enumerate(keys)}, diffusers_config)
    assert ours == {d: keys[int(v.item())] for d, v in converted.items()}

    with torch.device("meta"):
        tiny = [k for k, _ in UNetModel(TINY_UNET_CONFIG).named_parameters()]
    assert unet_diffusers_to_ldm_from_keys(tiny) == unet_diffusers_to_ldm(TINY_UNET_CONFIG)


def test_unet_names_of_every_scheme():
    m = unet_lora_key_map_from_keys(sd15_keys())
    q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    out = "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight"
    for name in ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                 "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                 "lycoris_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q"]:
        assert m[name] == q, name
    for name in ["unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0",
                 "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out",
                 "up_blocks.3.attentions.2.transformer_blocks.0.attn2.processor.to_out",
                 "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
                 "lora_unet_output_blocks_11_1_transformer_blocks_0_attn2_to_out_0"]:
        assert m[name] == out, name
    # Examples of §5.3 of the ComfyUI reference, as kohya names.
    for diffusers_path, ldm in [("conv_in", "input_blocks.0.0"), ("time_embedding.linear_1", "time_embed.0"),
                                ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
                                ("down_blocks.1.resnets.0.conv1", "input_blocks.4.0.in_layers.2"),
                                ("mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
                                ("up_blocks.0.resnets.0.conv1", "output_blocks.0.0.in_layers.2"),
                                ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
                                ("up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out")]:
        assert m["lora_unet_" + diffusers_path.replace(".", "_")] == ldm + ".weight"


def test_text_encoder_names(clip):
    m = clip_lora_key_map(clip.text_model)
    key = "text_model.encoder.layers.1.self_attn.q_proj.weight"
    for name in ["lora_te_text_model_encoder_layers_1_self_attn_q_proj",
                 "lora_te1_text_model_encoder_layers_1_self_attn_q_proj",
                 "text_encoder.text_model.encoder.layers.1.self_attn.q_proj"]:
        assert m[name] == key
    assert m["lora_te_text_model_encoder_layers_0_mlp_fc2"] == "text_model.encoder.layers.0.mlp.fc2.weight"


def test_kohya_diffusers_names_and_ldm_names_merge_identically(unet):
    ldm = "input_blocks.4.0.in_layers.2"  # a 3×3 conv 32→64
    up, down = lora_pair(64, (32, 3, 3))
    results = []
    for name in ["lora_unet_down_blocks_1_resnets_0_conv1", "lora_unet_input_blocks_4_0_in_layers_2",
                 "unet.down_blocks.1.resnets.0.conv1"]:
        suffixes = ((".lora_up.weight", ".lora_down.weight") if name.startswith("lora_")
                    else (".lora_B.weight", ".lora_A.weight"))
        sd = {name + suffixes[0]: up, name + suffixes[1]: down}
        patched, _, report = apply_lora(unet, None, sd, 1.0, 1.0, name="x.safetensors")
        assert report.unet_patched == 1
        with patched.applied() as m:
            results.append(m.get_parameter(ldm + ".weight").detach().clone())
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_chained_loras_stack_and_leave_their_inputs_alone(unet):
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    a, b = lora_pair(32, (32,)), lora_pair(32, (32,))
    one, _, _ = apply_lora(unet, None, {q + ".lora_up.weight": a[0], q + ".lora_down.weight": a[1]}, 0.5, 0, name="a")
    two, _, _ = apply_lora(one, None, {q + ".lora_up.weight": b[0], q + ".lora_down.weight": b[1]}, 2.0, 0, name="b")
    key = unet_lora_key_map(unet.model)[q]
    assert not unet.patches and [s for s, _ in one.patches[key]] == [0.5]
    assert [s for s, _ in two.patches[key]] == [0.5, 2.0]
    w = unet.model.get_parameter(key).detach().clone()
    with two.applied() as m:
        torch.testing.assert_close(m.get_parameter(key).detach(), w + 0.5 * a[0] @ a[1] + 2.0 * b[0] @ b[1])


def test_strength_zero_returns_the_inputs(unet, clip):
    sd = {"lora_unet_conv_in.lora_up.weight": torch.randn(32, 2, 1, 1),
          "lora_unet_conv_in.lora_down.weight": torch.randn(2, 4, 3, 3),
          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(64, 2),
          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(2, 32)}
    m, c, _ = apply_lora(unet, clip, sd, 0.0, 0.0, name="z")
    assert m is unet and c is clip
    m, c, report = apply_lora(unet, clip, sd, 0.0, 1.0, name="z")
    assert m is unet and c is not clip and report.clip_patched == 1 and not unet.patches
    assert clip.patcher is None or not clip.patcher.patches


def test_lora_for_another_architecture_is_an_error_naming_the_file(unet, clip):
    flux_like = {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(2, 3072),
                 "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(3072, 2)}
    with pytest.raises(LoraMatchError, match="other_arch.safetensors"):
        apply_lora(unet, clip, flux_like, 1.0, 1.0, name="other_arch.safetensors")

    sdxl = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(64, 2),
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(2, 32)}
    with pytest.raises(LoraMatchError, match=r"xl_style\.safetensors.*SDXL"):
        apply_lora(unet, clip, sdxl, 1.0, 1.0, name="xl_style.safetensors")

    # Right names, wrong shapes (an SD2 LoRA: 1024-wide context) also count as no match.
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    sd2 = {k + ".lora_up.weight": torch.randn(32, 2), k + ".lora_down.weight": torch.randn(2, 1024)}
    with pytest.raises(LoraMatchError, match="sd2.safetensors"):
        apply_lora(unet, clip, sd2, 1.0, 1.0, name="sd2.safetensors")

    # A UNet-only SDXL LoRA in LDM names: most layers fit by name and size, cross-attention does not.
    q, k = (f"lora_unet_input_blocks_1_1_transformer_blocks_0_{m}" for m in ("attn1_to_q", "attn2_to_k"))
    xl = {q + ".lora_up.weight": torch.randn(32, 2), q + ".lora_down.weight": torch.randn(2, 32),
          k + ".lora_up.weight": torch.randn(32, 2), k + ".lora_down.weight": torch.randn(2, 2048)}
    with pytest.raises(LoraMatchError, match=r"unet_only_xl\.safetensors.*text-encoder width"):
        apply_lora(unet, clip, xl, 1.0, 1.0, name="unet_only_xl.safetensors")


def test_partial_match_warns_with_examples(unet, caplog):
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {q + ".lora_up.weight": torch.randn(32, 2), q + ".lora_down.weight": torch.randn(2, 32),
          "lora_unet_down_blocks_9_nonsense.lora_up.weight": torch.randn(4, 2),
          "lora_unet_down_blocks_9_nonsense.lora_down.weight": torch.randn(2, 4)}
    with caplog.at_level(logging.INFO, logger="nodes.sd.lora"):
        _, _, report = apply_lora(unet, None, sd, 1.0, 1.0, name="half.safetensors")
    assert report.matched_keys == 2 and len(report.unmatched) == 2 and report.unet_patched == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("half.safetensors" in w and "down_blocks_9_nonsense" in w for w in warnings)
    assert any("2 of 4 keys matched" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_a_layer_stored_twice_uses_the_first_and_reports_the_second(unet):
    q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    up, down = lora_pair(32, (32,))
    sd = {q + ".lora_B.weight": up, q + ".lora_A.weight": down, q + ".lora.up.weight": up}
    _, _, report = apply_lora(unet, None, sd, 1.0, 1.0, name="twice")
    assert report.unet_patched == 1 and report.unmatched == [q + ".lora.up.weight"]
