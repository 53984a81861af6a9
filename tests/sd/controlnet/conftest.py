"""Shared ControlNet fixtures: the tiny net (tests/sd/conftest.py has the tiny checkpoint) and one
intra-op thread, since these matrices are tiny and the machine is shared."""
import pytest

from nodes.sd.controlnet import ControlNet, load_controlnet
from nodes.sd.tiny_extras import make_tiny_controlnet


@pytest.fixture(scope="session")
def tiny_controlnet_file(tmp_path_factory):
    return make_tiny_controlnet(tmp_path_factory.mktemp("cn") / "tiny-cn.safetensors", seed=0)


@pytest.fixture
def tiny_controlnet(tiny_controlnet_file) -> ControlNet:
    return load_controlnet(tiny_controlnet_file, device="cpu")
