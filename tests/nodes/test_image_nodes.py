"""Image and latent nodes: loading, saving (naming, metadata, safety), resizing, padding."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.workflow.png import read_text_chunks
from nodes.image import ImagePadForOutpaint, ImageScale, LoadImage, SaveImage
from nodes.latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy, SetLatentNoiseMask
from nodes.image_ops import bislerp


def write_rgba(path, size=(8, 6)):
    array = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    array[..., 0] = 255  # red
    array[..., 3] = 255
    array[:2, :2, 3] = 0  # transparent corner
    Image.fromarray(array, "RGBA").save(path)


def test_load_image_with_alpha(layout):
    write_rgba(layout.input / "a.png")
    image, mask = LoadImage().run("a.png")
    assert image.shape == (1, 6, 8, 3) and image.dtype == torch.float32
    assert torch.all(image[..., 0] == 1.0) and torch.all(image[..., 1:] == 0.0)
    assert mask.shape == (1, 6, 8)
    assert mask[0, :2, :2].eq(1.0).all() and mask[0].sum() == 4, "mask = 1 - alpha"


def test_load_rgb_gives_default_mask_and_animated_gif_gives_batch(layout):
    Image.new("RGB", (10, 10), (0, 255, 0)).save(layout.input / "g.jpg")
    image, mask = LoadImage().run("g.jpg")
    assert image.shape == (1, 10, 10, 3) and mask.shape == (1, 64, 64) and mask.sum() == 0
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(layout.input / "anim.gif", save_all=True, append_images=frames[1:])
    image, _ = LoadImage().run("anim.gif")
    assert image.shape[0] == 3


def test_load_image_errors(layout):
    (layout.input / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="input 'image': cannot decode 'broken.png'"):
        LoadImage().run("broken.png")
    assert LoadImage.validate("missing.png") == "Invalid image file: missing.png"
    assert LoadImage.validate("../../etc/passwd").startswith("Invalid image file")
    assert "broken.png" in LoadImage.inputs[0].choices()


def test_load_image_fingerprint_follows_file_contents(layout):
    path = layout.input / "f.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    first = LoadImage.fingerprint("f.png")
    assert LoadImage.fingerprint("f.png") == first
    Image.new("RGB", (4, 4), (9, 9, 9)).save(path)
    assert LoadImage.fingerprint("f.png") != first


def test_save_image_naming_metadata_and_subfolders(layout):
    images = torch.rand(2, 16, 24, 3)
    ui = SaveImage().run(images, "ComfyUI", prompt={"1": {"class_type": "X", "inputs": {}}},
                         extra_pnginfo={"workflow": {"nodes": []}}).ui
    assert [i["filename"] for i in ui["images"]] == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    assert all(i["type"] == "output" and i["subfolder"] == "" for i in ui["images"])
    chunks = read_text_chunks((layout.output / "ComfyUI_00001_.png").read_bytes())
    assert json.loads(chunks["prompt"]) == {"1": {"class_type": "X", "inputs": {}}}
    assert json.loads(chunks["workflow"]) == {"nodes": []}
    with Image.open(layout.output / "ComfyUI_00002_.png") as pil:
        assert pil.size == (24, 16)
        saved = np.asarray(pil, dtype=np.float32) / 255
    # 8-bit truncation as ComfyUI does it (255·x cast down), so at most one level off, never above
    diff = images[1].numpy() - saved
    assert diff.min() >= -1e-6 and diff.max() < 1 / 255 + 1e-6
    again = SaveImage().run(images[:1], "ComfyUI").ui["images"][0]["filename"]
    assert again == "ComfyUI_00003_.png"
    sub = SaveImage().run(images[:1], "run1/%width%x%height%").ui["images"][0]
    assert sub == {"filename": "24x16_00001_.png", "subfolder": "run1", "type": "output"}
    assert not list(layout.output.rglob("*.part")), "no temporary files left behind"


@pytest.mark.parametrize("prefix", ["../escape", "/etc/x", "a/../../b"])
def test_save_image_refuses_paths_outside_output(layout, prefix):
    with pytest.raises(ValueError, match="filename_prefix"):
        SaveImage().run(torch.rand(1, 8, 8, 3), prefix)


def test_preview_goes_to_temp(layout, library):
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "p.png"}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    Image.new("RGB", (8, 8)).save(layout.input / "p.png")
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, library))
    item = result.outputs["3"]["images"][0]
    assert item["type"] == "temp" and (layout.temp / item["filename"]).exists()


def test_image_scale_keeps_aspect_with_zero():
    image = torch.rand(1, 20, 40, 3)
    out, = ImageScale().run(image, "bilinear", 20, 0, "disabled")
    assert out.shape == (1, 10, 20, 3)
    out, = ImageScale().run(image, "lanczos", 80, 40, "disabled")
    assert out.shape == (1, 40, 80, 3)
    out, = ImageScale().run(image, "nearest-exact", 20, 20, "center")
    assert torch.equal(out, ImageScale().run(image[:, :, 10:30], "nearest-exact", 20, 20, "disabled")[0])


def test_pad_for_outpaint_mask_is_hand_derived():
    image = torch.zeros(1, 100, 100, 3)
    padded, mask = ImagePadForOutpaint().run(image, left=8, top=0, right=0, bottom=0, feathering=10)
    assert padded.shape == (1, 100, 108, 3) and torch.all(padded[:, :, :8] == 0.5)
    assert mask.shape == (1, 100, 108) and torch.all(mask[0, :, :8] == 1.0)
    # inside the image, distance d from the padded (left) edge: ((10 - d) / 10)^2 for d < 10, else 0
    assert mask[0, 50, 8].item() == pytest.approx(1.0)
    assert mask[0, 50, 8 + 3].item() == pytest.approx(0.49)
    assert mask[0, 50, 8 + 10].item() == 0.0


def test_latent_nodes():
    latent, = EmptyLatentImage().run(64, 48, 2)
    assert latent["samples"].shape == (2, 4, 6, 8) and latent["samples"].abs().sum() == 0
    up, = LatentUpscale().run({"samples": torch.rand(1, 4, 8, 8)}, "bilinear", 32, 0, "disabled")
    assert up["samples"].shape == (1, 4, 8, 8), "each side at least 64 px"
    up, = LatentUpscaleBy().run({"samples": torch.rand(1, 4, 8, 8), "noise_mask": torch.ones(1, 1, 8, 8)},
                                "bislerp", 1.5)
    assert up["samples"].shape == (1, 4, 12, 12) and "noise_mask" not in up
    masked, = SetLatentNoiseMask().run({"samples": torch.rand(1, 4, 8, 8)}, torch.ones(1, 64, 64))
    assert masked["noise_mask"].shape == (1, 1, 64, 64)


def test_bislerp_keeps_vector_norms_between_equal_norm_neighbours():
    a = torch.tensor([1.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0, 0.0])
    samples = torch.stack([a, b]).T.reshape(1, 4, 1, 2)  # two unit vectors side by side
    out = bislerp(samples, 4, 1)
    norms = out[0].reshape(4, -1).norm(dim=0)
    assert torch.allclose(norms, torch.ones(4), atol=1e-5), "slerp keeps unit length (lerp would shrink it)"
