"""CPU thread policy: small models single-threaded, big ones torch's default, env override wins."""
import torch

from nodes.sd import device


def test_small_models_run_single_threaded_and_the_setting_is_restored(monkeypatch):
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    small = torch.nn.Linear(4, 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs with 1 (tests/conftest.py); show the switch and the restore
    try:
        with device.cpu_threads(small):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_big_models_keep_the_default_and_env_overrides(monkeypatch):
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    big = torch.nn.Linear(4, 4)
    big._nodegraph_parameter_count = device.SMALL_MODEL_PARAMETERS  # as counted for a full-size UNet
    assert device.cpu_threads_for(big) == device._DEFAULT_THREADS
    monkeypatch.setenv(device.THREADS_ENV, "3")
    assert device.cpu_threads_for(big) == 3 and device.cpu_threads_for(torch.nn.Linear(2, 2)) == 3
