"""One intra-op thread for these tests: their matrices are tiny, and on a shared 2-core machine the
thread hand-off costs more than the math (10x slower with 2 threads under load)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
