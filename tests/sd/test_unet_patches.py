"""The UNet's model-option extension points (block patches, attention patches and replacements): identity
patches leave the output unchanged, each point is visited where and in the order documented, a replacement
acts only at its site, and what a patch sees (block, index, heads, shapes) is right. Tiny random SD1 UNet."""

import pytest
import torch

from nodes.sd.attention import attention
from nodes.sd.model_options import NO_OPTIONS, PatchContext, SamplingRun, UNetPatches
from nodes.sd.tiny import TINY_UNET_CONFIG, _init_weights
from nodes.sd.unet import UNetModel


@pytest.fixture(scope="module")
def unet():
    model = UNetModel(TINY_UNET_CONFIG).eval()
    _init_weights(model, 3)
    return model


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900.0, 20.0]),
            torch.randn(2, 77, TINY_UNET_CONFIG.context_dim, generator=g))


def run(unet, inputs, options):
    pc = PatchContext(options.unet, torch.tensor([10.0, 10.0]), (1, 0), SamplingRun())
    with torch.no_grad():
        return unet(*inputs, patch_context=pc), pc


def plain(unet, inputs):
    with torch.no_grad():
        return unet(*inputs)


def test_empty_patch_context_is_the_plain_network(unet, inputs):
    out, _ = run(unet, inputs, NO_OPTIONS)
    assert torch.equal(out, plain(unet, inputs))


def test_identity_patches_at_every_point_change_nothing(unet, inputs):
    options = (NO_OPTIONS
               .with_input_block_patch(lambda h, pc: h, source="t")
               .with_input_block_patch(lambda h, pc: h, source="t", after_skip=True)
               .with_output_block_patch(lambda h, s, pc: (h, s), source="t")
               .with_attention_patch("self", input=lambda n, c, v, pc: (n, c, v), output=lambda o, pc: o, source="t")
               .with_attention_patch("cross", input=lambda n, c, v, pc: (n, c, v), output=lambda o, pc: o, source="t")
               .with_after_self_attention_patch(lambda x, pc: x, source="t"))
    out, _ = run(unet, inputs, options)
    torch.testing.assert_close(out, plain(unet, inputs), rtol=0, atol=0)
    # a replacement that computes the same attention by hand: equal up to kernel rounding
    same = lambda q, k, v, pc: attention(q, k, v, pc.heads)  # noqa: E731
    for site in unet.attention_sites():
        options = options.with_attention_replacement("self", site, same, source="t")
    out, _ = run(unet, inputs, options)
    torch.testing.assert_close(out, plain(unet, inputs), rtol=1e-5, atol=1e-5)


def test_block_patches_visit_every_block_in_order(unet, inputs):
    seen = []
    options = (NO_OPTIONS
               .with_input_block_patch(lambda h, pc: seen.append(("in", pc.block, h.shape[1])) or h, source="t")
               .with_input_block_patch(lambda h, pc: seen.append(("after", pc.block)) or h, source="t", after_skip=True)
               .with_output_block_patch(lambda h, s, pc: seen.append(("out", pc.block, h.shape[1], s.shape[1]))
                                        or (h, s), source="t"))
    _, pc = run(unet, inputs, options)
    n_in, n_out = len(unet.input_blocks), len(unet.output_blocks)
    assert [s[1] for s in seen if s[0] == "in"] == [("input", i) for i in range(n_in)]
    assert [s[1] for s in seen if s[0] == "after"] == [("input", i) for i in range(n_in)]
    assert [s[1] for s in seen if s[0] == "out"] == [("output", i) for i in range(n_out)]
    # output block 0 gets the middle block's h and the deepest skip, both at the deepest width
    deepest = TINY_UNET_CONFIG.level_channels[-1]
    assert seen[2 * n_in][2:] == (deepest, deepest)
    assert pc.original_shape == (2, 4, 16, 16)


def test_output_block_patch_acts_on_the_skip(unet, inputs):
    options = NO_OPTIONS.with_output_block_patch(lambda h, s, pc: (h, s * 0), source="t")
    out, _ = run(unet, inputs, options)
    assert not torch.allclose(out, plain(unet, inputs))


def test_replacement_acts_only_at_its_site_and_the_exact_key_wins(unet, inputs):
    calls = []

    def record(tag):
        def replacement(q, k, v, pc):
            calls.append((tag, pc.block, pc.block_index, pc.heads, pc.dim_head, q.shape))
            return v if v.shape == q.shape else q  # cross-attention values have the text's length
        return replacement

    options = (NO_OPTIONS.with_attention_replacement("self", ("middle", 0), record("block"), source="t")
               .with_attention_replacement("self", ("middle", 0, 0), record("exact"), source="t"))
    out, _ = run(unet, inputs, options)
    mid = TINY_UNET_CONFIG.level_channels[-1]
    tokens = (16 // 2 ** (len(TINY_UNET_CONFIG.channel_mult) - 1)) ** 2
    assert calls == [("exact", ("middle", 0), 0, 8, mid // 8, (2, tokens, mid))]
    assert not torch.allclose(out, plain(unet, inputs))
    calls.clear()
    run(unet, inputs, NO_OPTIONS.with_attention_replacement("cross", ("output", 1), record("x"), source="t"))
    assert [(c[1], c[2]) for c in calls] == [(("output", 1), 0)]
    assert calls[0][5][1] == (16 // 2) ** 2  # output block 1 is on the second (8x8) level


def test_attention_input_patch_can_reroute_keys_and_values(unet, inputs):
    """Hypernetwork-style: the patch returns its own context/value; zero values silence every attention."""
    options = NO_OPTIONS.with_attention_patch("cross", input=lambda n, c, v, pc: (n, c, v * 0), source="t")
    out, _ = run(unet, inputs, options)
    expected_seen = []
    options2 = NO_OPTIONS.with_attention_patch(
        "cross", input=lambda n, c, v, pc: expected_seen.append((c is v, c.shape[-1])) or (n, c, v), source="t")
    run(unet, inputs, options2)
    assert expected_seen and all(same and width == TINY_UNET_CONFIG.context_dim for same, width in expected_seen)
    assert not torch.allclose(out, plain(unet, inputs))


def test_transformer_index_and_shapes(unet, inputs):
    seen = []
    options = NO_OPTIONS.with_after_self_attention_patch(
        lambda x, pc: seen.append((pc.transformer_index, pc.block, pc.activations_shape)) or x, source="t")
    run(unet, inputs, options)
    assert [s[0] for s in seen] == list(range(len(unet.attention_sites())))
    assert all(s[2][0] == 2 and s[2][2] * s[2][3] > 0 for s in seen)


def test_attention_sites_of_the_tiny_unet(unet):
    sites = unet.attention_sites()
    assert ("middle", 0, 0) in sites and ("input", 1, 0) in sites and ("output", 0, 0) in sites
    assert ("input", 0, 0) not in sites  # conv_in has no attention
    assert len(sites) == sum(TINY_UNET_CONFIG.transformer_depth) * TINY_UNET_CONFIG.num_res_blocks \
        + sum(TINY_UNET_CONFIG.transformer_depth) * (TINY_UNET_CONFIG.num_res_blocks + 1) + 1


def test_unet_patches_inactive_by_default():
    assert not UNetPatches().active and not UNetPatches().transformer_active
