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


def test_a_small_model_on_a_large_input_gets_the_default(monkeypatch):
    """The work counts, not the parameters alone: SD1.5's VAE (84 M parameters) decoding a 512² image
    (a 64 × 64 latent) takes torch's default; the tiny UNet on an 8 × 8 latent batch of 2 takes one."""
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    vae = torch.nn.Linear(4, 4)
    vae._nodegraph_parameter_count = 83_653_863
    assert device.cpu_threads_for(vae, positions=64 * 64) == device._DEFAULT_THREADS
    assert device.cpu_threads_for(vae, positions=8 * 8) == 1  # a 64² image: small ops
    assert device.cpu_threads_for(vae) == 1  # positions not known: the parameters decide
    tiny_unet = torch.nn.Linear(4, 4)
    tiny_unet._nodegraph_parameter_count = 3_000_000
    assert device.cpu_threads_for(tiny_unet, positions=2 * 8 * 8) == 1
    assert device.latent_positions(torch.zeros(2, 4, 8, 6)) == 96


def test_the_vae_passes_the_latent_positions_of_each_call(tiny, monkeypatch):
    """Decode, encode and their tiled forms tell the policy how large the latent is (an 8 × 6 latent
    batch of 2 = a 64 × 48 image batch of 2), so a large image gets the default threads."""
    from nodes.sd.vae_runtime import VAE
    from nodes.sd.vae_tiled import decode_tiled, encode_tiled

    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    seen = []
    real = device.cpu_threads_for
    monkeypatch.setattr(device, "cpu_threads_for", lambda module, positions=None: seen.append(positions) or real(module, positions))
    vae = VAE(tiny.vae)
    latent = torch.randn(2, 4, 8, 6)
    image = torch.rand(2, 64, 48, 3)
    vae.decode(latent)
    vae.encode(image)
    decode_tiled(vae, latent, tile=8, overlap=2)
    encode_tiled(vae, image, tile=64, overlap=16)
    assert seen == [2 * 8 * 6] * 4
