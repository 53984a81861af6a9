"""Per-thread scratch buffers: reused across layers, grown when too small, per thread, dropped when the
outermost CPU model run ends — and the paths that use them (the lean cast, Winograd's weights)."""
import threading

import pytest
import torch
import torch.nn.functional as F

from nodes.sd import device, scratch, winograd
from nodes.sd.weight_casting import enable_casting


@pytest.fixture(autouse=True)
def no_buffers_yet():
    scratch.release()  # what earlier tests' layers left outside any run


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_a_buffer_is_reused_until_a_larger_one_is_asked_for():
    with scratch.run():
        first = scratch.buffer("t", (4, 6), torch.float32)
        assert first.shape == (4, 6) and first.dtype == torch.float32
        smaller = scratch.buffer("t", (3, 2), torch.float32)
        assert smaller.shape == (3, 2) and _storage(smaller) == _storage(first)
        larger = scratch.buffer("t", (10, 10), torch.float32)
        assert _storage(larger) != _storage(first) and scratch.held_bytes() == 400
        other_dtype = scratch.buffer("t", (2,), torch.float64)
        assert other_dtype.dtype == torch.float64 and scratch.held_bytes() == 16
        scratch.buffer("u", (5,), torch.float32)  # names are separate buffers
        assert scratch.held_bytes() == 16 + 20


def test_dropped_when_the_outermost_run_ends_not_before():
    with scratch.run():
        scratch.buffer("t", (100,), torch.float32)
        with scratch.run():
            scratch.buffer("u", (100,), torch.float32)
        assert scratch.held_bytes() == 800
    assert scratch.held_bytes() == 0


def test_each_thread_has_its_own():
    seen = {}

    def other():
        with scratch.run():
            seen["other"] = _storage(scratch.buffer("t", (100,), torch.float32))
            seen["other held"] = scratch.held_bytes()

    with scratch.run():
        mine = _storage(scratch.buffer("t", (100,), torch.float32))
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen["other"] != mine and seen["other held"] == 400 and scratch.held_bytes() == 400


def test_a_cpu_model_run_drops_what_its_lean_layers_cast():
    conv = enable_casting(torch.nn.Conv2d(8, 8, 3, padding=1).half(), torch.float32)
    x = torch.randn(1, 8, 6, 6)
    with torch.inference_mode(), device.cpu_threads(conv):
        got = conv(x)
        assert scratch.held_bytes() == conv.weight.numel() * 4  # the fp32 copy of the fp16 weight
    assert scratch.held_bytes() == 0
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()


def test_winograd_transforms_every_weight_into_one_buffer():
    """The transformed weights (4× a weight) are the largest per-layer allocations of a UNet step: a
    second conv reuses the first one's buffer and its result is still right."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 256, 12, 12, generator=g)
    weights = [torch.randn(256, 256, 3, 3, generator=g) / 48 for _ in range(2)]
    with torch.inference_mode(), scratch.run():
        transformed = [winograd._transformed_weight(w) for w in weights]  # both kept alive
        assert _storage(transformed[0]) == _storage(transformed[1])
        for w in weights:
            exact = F.conv2d(x.double(), w.double(), padding=1)
            got = winograd.conv3x3(x, w, None)
            assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
