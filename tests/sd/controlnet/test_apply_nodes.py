"""The ControlNet nodes: ComfyUI's names and ranges, what Apply ControlNet (old / advanced) puts into
a conditioning, chaining, and bad hints (wrong channel count, empty, black)."""
from __future__ import annotations

import logging

import pytest
import torch

from nodegraph import NodeRegistry
from nodes.controlnet import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, ControlNetApply,
                              ControlNetApplyAdvanced)


def image(batch=1, h=32, w=32, channels=3, value=None):
    if value is not None:
        return torch.full((batch, h, w, channels), value)
    return torch.rand(batch, h, w, channels, generator=torch.Generator().manual_seed(0))


def conditioning(n=1):
    return [[torch.randn(1, 77, 32), {"pooled_output": None}] for _ in range(n)]


def test_node_definitions_match_comfyui():
    assert NODE_DISPLAY_NAME_MAPPINGS == {"ControlNetLoader": "Load ControlNet Model",
                                          "DiffControlNetLoader": "Load ControlNet Model (diff)",
                                          "ControlNetApply": "Apply ControlNet (OLD)",
                                          "ControlNetApplyAdvanced": "Apply ControlNet"}
    registry = NodeRegistry()
    registry.register_all(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    loader = registry.get("ControlNetLoader").info()
    assert loader["category"] == "loaders" and loader["output"] == ["CONTROL_NET"]
    assert list(loader["input"]["required"]) == ["control_net_name"]
    diff = registry.get("DiffControlNetLoader").info()
    assert diff["category"] == "loaders" and diff["output"] == ["CONTROL_NET"]
    assert list(diff["input"]["required"]) == ["model", "control_net_name"]
    old = registry.get("ControlNetApply").info()
    assert old["category"] == "conditioning/controlnet" and old.get("deprecated") is True
    assert list(old["input"]["required"]) == ["conditioning", "control_net", "image", "strength"]
    kind, opts = old["input"]["required"]["strength"]
    assert (kind, opts["default"], opts["min"], opts["max"], opts["step"]) == ("FLOAT", 1.0, 0.0, 10.0, 0.01)
    adv = registry.get("ControlNetApplyAdvanced").info()
    assert adv["category"] == "conditioning/controlnet" and not adv.get("deprecated")
    assert list(adv["input"]["required"]) == ["positive", "negative", "control_net", "image", "strength",
                                              "start_percent", "end_percent"]
    assert list(adv["input"]["optional"]) == ["vae"] and adv["input"]["optional"]["vae"][0] == "VAE"
    for name, default in (("start_percent", 0.0), ("end_percent", 1.0)):
        kind, opts = adv["input"]["required"][name]
        assert (kind, opts["default"], opts["min"], opts["max"], opts["step"]) == ("FLOAT", default, 0.0, 1.0, 0.001)
    assert adv["output"] == ["CONDITIONING", "CONDITIONING"] and adv["output_name"] == ["positive", "negative"]


def test_strength_zero_returns_the_conditioning_unchanged(tiny_controlnet):
    pos, neg = conditioning(), conditioning()
    assert ControlNetApply().run(pos, tiny_controlnet, image(), 0.0)[0] is pos
    out = ControlNetApplyAdvanced().run(pos, neg, tiny_controlnet, image(), 0.0, 0.0, 1.0)
    assert out[0] is pos and out[1] is neg


def test_old_apply_copies_the_net_per_cond_and_lends_it_to_the_uncond(tiny_controlnet):
    cond = conditioning(2)
    (out,) = ControlNetApply().run(cond, tiny_controlnet, image(), 0.6)
    assert all("control" not in opts for _, opts in cond), "the input conditioning is not modified"
    nets = [opts["control"] for _, opts in out]
    assert nets[0] is not nets[1] and all(n is not tiny_controlnet and n.model is tiny_controlnet.model for n in nets)
    assert all(opts["control_apply_to_uncond"] is True for _, opts in out)
    assert nets[0].strength == 0.6 and nets[0].cond_hint_original.shape == (1, 3, 32, 32)  # IMAGE → NCHW
    (again,) = ControlNetApply().run(out, tiny_controlnet, image(), 1.0)
    assert again[0][1]["control"].previous_controlnet is nets[0]  # applying twice chains


def test_advanced_apply_shares_one_copy_per_previous_net(tiny_controlnet):
    pos, neg = conditioning(), conditioning()
    p, n = ControlNetApplyAdvanced().run(pos, neg, tiny_controlnet, image(), 0.9, 0.2, 0.8)
    net = p[0][1]["control"]
    assert n[0][1]["control"] is net, "same previous net (none): one copy, so the sampler batches them"
    assert net.timestep_percent_range == (0.2, 0.8) and net.strength == 0.9
    assert p[0][1]["control_apply_to_uncond"] is False and n[0][1]["control_apply_to_uncond"] is False
    # positive already controlled, negative not: different previous nets, different copies
    p2, n2 = ControlNetApplyAdvanced().run(p, neg, tiny_controlnet, image(), 1.0, 0.0, 1.0)
    assert p2[0][1]["control"] is not n2[0][1]["control"]
    assert p2[0][1]["control"].previous_controlnet is net and n2[0][1]["control"].previous_controlnet is None


def test_hint_with_the_wrong_channel_count_names_the_input(tiny_controlnet):
    with pytest.raises(ValueError, match=r"ControlNetApplyAdvanced: input 'image' has 4 channel\(s\).*3-channel"):
        ControlNetApplyAdvanced().run(conditioning(), conditioning(), tiny_controlnet, image(channels=4), 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ControlNetApply: input 'image'"):
        ControlNetApply().run(conditioning(), tiny_controlnet, image(channels=1), 1.0)


def test_black_hint_warns_and_empty_hint_is_skipped(tiny_controlnet, caplog):
    pos, neg = conditioning(), conditioning()
    with caplog.at_level(logging.WARNING, logger="nodes.controlnet"):
        p, _ = ControlNetApplyAdvanced().run(pos, neg, tiny_controlnet, image(value=0.0), 1.0, 0.0, 1.0)
    assert "control" in p[0][1]
    assert "ControlNetApplyAdvanced" in caplog.text and "black" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nodes.controlnet"):
        (out,) = ControlNetApply().run(pos, tiny_controlnet, torch.zeros(0, 32, 32, 3), 1.0)
    assert out is pos and "ControlNetApply" in caplog.text and "empty" in caplog.text
