"""Test-wide settings: no network, quiet logs, deterministic CPU threads; the Ray runtime."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

# One torch thread: the tests use tiny models, and on a shared 2-core machine two intra-op threads
# mostly wait for each other (measured: the SD tests ran ~5x faster). Numerics stay deterministic.
try:
    import torch
except ModuleNotFoundError:  # the engine's own tests also run without torch
    torch = None
if torch is not None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_runtime():
    """One small local Ray runtime for every test that uses the Ray backend (started on first use:
    a start costs 7-16 s on the shared machine, so not one per module), shut down at the end."""
    from tests.server.ray_support import start_runtime
    ray = start_runtime()
    yield ray
    ray.shutdown()
