"""--compile (nodes/sd/compiled_unet.py): the plain UNet call goes through torch.compile, compiled once per
model and weight-patch set; calls with ControlNet residuals or model-option patches, a failing compile
and streamed models run eagerly. The real inductor compile (minutes on the CPU) is the slow test."""
from __future__ import annotations

import logging

import pytest
import torch

from nodes.sd import compiled_unet
from nodes.sd.compiled_unet import unet_caller
from nodes.sd.tiny import TINY_UNET_CONFIG
from nodes.sd.unet import UNetModel


class ActivePatches:
    class patches:
        active = True


class Eager(torch.nn.Module):
    """The UNet's call signature; records which calls arrive eagerly (with what) and runs the plain UNet."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.seen = unet, []

    def forward(self, x, timesteps, context, control=None, patch_context=None):
        self.seen.append((control is not None, patch_context is not None))
        return self.unet(x, timesteps, context)


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNetModel(TINY_UNET_CONFIG).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10.0, 500.0]), torch.randn(2, 5, 32, generator=g)


class FakeCompile:
    def __init__(self, fail: bool = False):
        self.compiled, self.calls, self.fail = 0, 0, fail

    def __call__(self, module):
        self.compiled += 1

        def run(*args):
            self.calls += 1
            if self.fail:
                raise RuntimeError("no compiler here")
            return module(*args)
        return run


def test_without_the_option_the_unet_is_called_as_it_is(unet, monkeypatch):
    monkeypatch.delenv("NODEGRAPH_COMPILE", raising=False)
    assert unet_caller(unet, "p1", FakeCompile()) is unet


def test_plain_calls_are_compiled_once_per_patch_set_others_run_eagerly(unet, monkeypatch):
    monkeypatch.setenv("NODEGRAPH_COMPILE", "1")
    fake, model = FakeCompile(), Eager(unet)
    x, t, c = inputs()
    with torch.no_grad():
        expected = unet(x, t, c)
        call = unet_caller(model, "p1", fake)
        for _ in range(3):
            torch.testing.assert_close(call(x, t, c), expected, rtol=0, atol=0)
        assert (fake.compiled, fake.calls) == (1, 3)
        model.seen.clear()
        call(x, t, c, control={"middle": [torch.zeros(2, 64, 4, 4)]})  # ControlNet residuals: eager
        call(x, t, c, patch_context=ActivePatches())  # FreeU, SAG, ...: eager
        assert (fake.compiled, fake.calls) == (1, 3)
        assert model.seen[-2:] == [(True, False), (False, True)]
        unet_caller(model, "p2", fake)(x, t, c)  # other LoRA strengths: their weights were folded in
        assert (fake.compiled, fake.calls) == (2, 4)
        assert model.__dict__[compiled_unet._ATTR][0] == "p2"  # one compiled form per module, the latest
        assert compiled_unet._ATTR not in dict(model.named_modules())  # not registered as a submodule


def test_a_failing_compile_falls_back_to_eager_with_a_warning(unet, monkeypatch, caplog):
    monkeypatch.setenv("NODEGRAPH_COMPILE", "1")
    fake = FakeCompile(fail=True)
    x, t, c = inputs()
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        expected = unet(x, t, c)
        call = unet_caller(unet, "p1", fake)
        torch.testing.assert_close(call(x, t, c), expected, rtol=0, atol=0)
        torch.testing.assert_close(call(x, t, c), expected, rtol=0, atol=0)
    assert fake.calls == 1  # not tried again
    assert "compiling the UNet" in caplog.text and "runs without it" in caplog.text


def test_a_streamed_unet_is_not_compiled(unet, monkeypatch):
    from nodes.sd.block_streaming import stream_blocks
    monkeypatch.setenv("NODEGRAPH_COMPILE", "1")
    with stream_blocks(unet, "cpu"):
        assert unet_caller(unet, "p1", FakeCompile()) is unet


@pytest.mark.slow
def test_inductor_compile_gives_the_eager_output(unet, monkeypatch):
    monkeypatch.setenv("NODEGRAPH_COMPILE", "1")
    x, t, c = inputs()
    with torch.inference_mode():
        expected = unet(x, t, c)
        got = unet_caller(unet, "p1")(x, t, c)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
