"""Device / dtype policy."""
import pytest
import torch

from nodes.sd import device


def test_env_override_forces_cpu(monkeypatch):
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert device.compute_device() == torch.device("cpu")


def test_default_follows_cuda_availability(monkeypatch):
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    assert device.compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_runs_everything_in_fp32():
    cpu = torch.device("cpu")
    assert device.unet_dtype(cpu) == device.vae_dtype(cpu) == device.text_encoder_dtype(cpu) == torch.float32


def test_cuda_uses_half_precision_but_never_fp16_for_the_vae(monkeypatch):
    cuda = torch.device("cuda")
    assert device.unet_dtype(cuda) == device.text_encoder_dtype(cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.vae_dtype(cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.vae_dtype(cuda) == torch.float32


@pytest.mark.parametrize("value, default, expected", [
    ("", True, True), ("", False, False),  # unset or empty: the default
    ("1", False, True), ("Yes", False, True), (" on ", False, True),
    ("0", True, False), ("off", True, False), ("FALSE", True, False),
    ("maybe", True, True), ("maybe", False, False),  # not a yes or a no: the default
])
def test_env_flag(monkeypatch, value, default, expected):
    from nodes.sd.device import env_flag

    monkeypatch.setenv("NODEGRAPH_TEST_FLAG", value)
    assert env_flag("NODEGRAPH_TEST_FLAG", default) is expected
