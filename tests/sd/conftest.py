"""Shared SD fixtures: tiny random-weight checkpoints written once per test session."""
from __future__ import annotations

import pytest
import torch

from nodes.sd.checkpoint import load_checkpoint
from nodes.sd.tiny import make_tiny_checkpoint, make_tiny_inpainting_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("sd") / "tiny.safetensors", seed=0)


@pytest.fixture(scope="session")
def tiny_inpainting_checkpoint(tmp_path_factory):
    return make_tiny_inpainting_checkpoint(tmp_path_factory.mktemp("sd") / "tiny-inpainting.safetensors", seed=1)


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture
def seeded():
    """Opt-in (pytestmark) so sibling packages' tests keep their own RNG habits."""
    torch.manual_seed(0)


