"""UpscaleModelLoader + ImageUpscaleWithModel on spandrel: tiny models in the real file layouts load
through the ordinary loader and upscale exactly as spandrel's own forward pass does; tiling is seam-free
on a pointwise model, halves its tile on out-of-memory, and reports progress; wrong files are refused
with the node, the input and the file named."""
import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("spandrel") is None and not os.environ.get("CI"):
    pytest.skip("spandrel is not installed here (scripts/setup installs it; CI requires it)", allow_module_level=True)

from nodegraph import Executor, OutputCache, validate_prompt
from nodes.sd import upscale_model
from nodes.sd.upscale_model import UpscaleModel, upscale_image

from . import upscale_files as files


def upscale_dir(layout):
    return layout.models[0] / "upscale_models"


def run_loader(library, name):
    prompt = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": name}}}
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, library, targets=["1"]))


def load(library, name):
    return library.get("UpscaleModelLoader").cls().run(model_name=name)[0]


def upscale(library, model, image):
    return library.get("ImageUpscaleWithModel").cls().run(upscale_model=model, image=image)[0]


@pytest.fixture
def image():
    return torch.rand(2, 24, 20, 3, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("kind, arch, scale", [
    ("esrgan-original.pth", "ESRGAN", 4),
    ("realesrgan-x4plus.pth", "ESRGAN", 4),
    ("compact.safetensors", "Compact", 2),
    ("swinir-dataparallel.pth", "SwinIR", 2),
])
def test_real_layouts_load_and_upscale_as_spandrel_computes(layout, library, image, kind, arch, scale):
    folder = upscale_dir(layout)
    if kind == "esrgan-original.pth":
        model = files.tiny_esrgan()
        files.write_esrgan_original(folder / kind, model)
    elif kind == "realesrgan-x4plus.pth":
        model = files.tiny_esrgan(seed=1)
        files.write_realesrgan_x4plus(folder / kind, model)
    elif kind == "compact.safetensors":
        model = files.tiny_compact()
        files.write_safetensors(folder / kind, model)
    else:
        model = files.tiny_swinir()
        files.write_pth(folder / kind, model, prefix="module.")  # as saved from DataParallel

    assert kind in library.get("UpscaleModelLoader").info()["input"]["required"]["model_name"][0]
    loaded = load(library, kind)
    assert isinstance(loaded, UpscaleModel)
    assert (loaded.architecture.id, loaded.scale) == (arch, scale)
    out = upscale(library, loaded, image)
    assert out.shape == (2, 24 * scale, 20 * scale, 3)
    torch.testing.assert_close(out, files.reference_upscale(model, image), rtol=1e-5, atol=1e-5)


def test_tiles_of_a_pointwise_model_leave_no_seam(monkeypatch, image):
    """Each output pixel of this Compact model depends on one input pixel, so the blended tiles must
    equal the whole-image forward everywhere, overlaps included."""
    model = files.tiny_compact(pointwise=True)
    descriptor = upscale_model.import_spandrel().ModelLoader().load_from_state_dict(model.state_dict())
    monkeypatch.setattr(upscale_model, "TILE", 8)
    monkeypatch.setattr(upscale_model, "OVERLAP", 3)
    calls = []
    wrapped = UpscaleModel(descriptor)
    monkeypatch.setattr(descriptor, "_call_fn", lambda m, x: calls.append(x.shape) or m(x))
    out = upscale_image(wrapped, image)
    assert len(calls) == 2 * 5 * 4  # per image: rows start 0,5,10,15,20 and columns 0,5,10,15
    torch.testing.assert_close(out, files.reference_upscale(model, image), rtol=1e-6, atol=1e-6)


def test_tiled_output_of_a_full_model_stays_close_and_is_exact_away_from_seams(monkeypatch):
    model = files.tiny_compact(seed=5)
    descriptor = upscale_model.import_spandrel().ModelLoader().load_from_state_dict(model.state_dict())
    image = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(upscale_model, "TILE", 24)
    monkeypatch.setattr(upscale_model, "OVERLAP", 8)
    out = upscale_image(UpscaleModel(descriptor), image)
    whole = files.reference_upscale(model, image)
    # The first tile alone covers output rows/cols < 2*16 (before the next tile's overlap begins), far
    # enough from its own edge (the model sees 4 pixels around each pixel) to be exact.
    torch.testing.assert_close(out[:, :24, :24], whole[:, :24, :24], rtol=1e-6, atol=1e-6)
    assert (out - whole).abs().max() < 0.25


def test_out_of_memory_halves_the_tile_down_to_128(monkeypatch, image):
    model = files.tiny_compact()
    descriptor = upscale_model.import_spandrel().ModelLoader().load_from_state_dict(model.state_dict())
    big = torch.rand(1, 300, 260, 3, generator=torch.Generator().manual_seed(0))
    tiles = []

    def picky(m, x):
        tiles.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 128:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return m(x)

    monkeypatch.setattr(descriptor, "_call_fn", picky)
    out = upscale_image(UpscaleModel(descriptor), big)
    assert out.shape == (1, 600, 520, 3)
    assert tiles[0] > 256 and 256 in tiles and max(tiles[-1:]) <= 128

    def always(m, x):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(descriptor, "_call_fn", always)
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(UpscaleModel(descriptor), big)


def test_progress_reports_one_step_per_tile(monkeypatch, layout, library):
    files.write_safetensors(upscale_dir(layout) / "c.safetensors", files.tiny_compact())
    monkeypatch.setattr(upscale_model, "TILE", 16)
    monkeypatch.setattr(upscale_model, "OVERLAP", 4)
    events = []
    monkeypatch.setattr("nodegraph.progress.report_progress",
                        lambda value, total, preview=None: events.append((value, total)))
    upscale(library, load(library, "c.safetensors"), torch.rand(1, 30, 30, 3))
    assert events == [(i, 9) for i in range(1, 10)]  # starts 0, 12 and 24 on each side


def test_an_image_too_large_for_memory_is_refused_before_any_work(monkeypatch, layout, library):
    files.write_safetensors(upscale_dir(layout) / "c.safetensors", files.tiny_compact())
    monkeypatch.setattr(upscale_model, "available_memory", lambda: 1_000_000)
    model = load(library, "c.safetensors")
    from nodegraph import NodeInputError
    with pytest.raises(NodeInputError) as info:
        upscale(library, model, torch.rand(1, 256, 256, 3))
    assert info.value.input_name == "image" and "512x512" in str(info.value) and "GiB" in str(info.value)


# -- wrong files -----------------------------------------------------------------------------------

def assert_blames(result, *fragments):
    assert result.status == "error"
    error = result.error
    assert (error.node_id, error.node_type, error.input_name) == ("1", "UpscaleModelLoader", "model_name")
    for fragment in fragments:
        assert fragment in error.exception_message, error.exception_message


def test_a_lora_is_refused_saying_it_is_a_lora(layout, library):
    from nodes.sd.tiny_extras import make_tiny_lora
    make_tiny_lora(upscale_dir(layout) / "style.safetensors")
    assert_blames(run_loader(library, "style.safetensors"), "style.safetensors", "not an upscale model", "LoRA")


def test_a_truncated_pth_is_refused(layout, library):
    path = files.write_esrgan_original(upscale_dir(layout) / "4x.pth", files.tiny_esrgan())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_blames(run_loader(library, "4x.pth"), "4x.pth", "truncated")


def test_an_sd_checkpoint_is_refused_saying_what_it_is(layout, library):
    from nodes.sd.tiny import make_tiny_checkpoint
    make_tiny_checkpoint(upscale_dir(layout) / "sd.safetensors")
    result = run_loader(library, "sd.safetensors")
    assert_blames(result, "sd.safetensors", "not an upscale model", "an SD checkpoint")


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned-by-upscaler",))


def test_a_pickle_payload_runs_nothing(layout, library, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    upscale_dir(layout).mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": {"conv_first.weight": _Exploit()}}, upscale_dir(layout) / "evil.pth")
    assert_blames(run_loader(library, "evil.pth"), "evil.pth", "NOT unpickled")
    assert not (tmp_path / "pwned-by-upscaler").exists()
