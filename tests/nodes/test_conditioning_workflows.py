"""End to end: the area-composition example on the demo model; the T2I-Adapter and GLIGEN examples (made for
a real SD1.5) on tiny random models written here under the names they use, into the test's own models
folder; the hypernetwork node likewise. What each part contributes is checked by switching it off."""
import numpy as np
import pytest
import torch
from PIL import Image

from safetensors.torch import load_file

from nodes.default_model import ensure_default_checkpoint
from nodes.sd.tiny import make_tiny_checkpoint
from nodes.sd.tiny_adapters import TINY_GLIGEN, make_tiny_gligen, make_tiny_t2i_adapter
from tests.tiny_models import TINY_CHECKPOINT
from tools.build_workflows import GLIGEN_MODEL, SD15_CHECKPOINT, T2I_DEPTH_ADAPTER

from .test_workflows import pixels, prompt_of, run, saved_files


def small(prompt: dict) -> dict:
    """An SD1.5 example at 64×64 (the tiny models stand in for SD1.5; boxes scaled with the image)."""
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "GLIGENTextBoxApply":
            node["inputs"].update({k: node["inputs"][k] // 8 for k in ("width", "height", "x", "y")})
    return prompt


def set_input(prompt, class_type, **values):
    for node in prompt.values():
        if node["class_type"] == class_type:
            node["inputs"].update(values)
    return prompt


@pytest.fixture
def models(layout, tmp_path):
    ensure_default_checkpoint(layout)
    make_tiny_checkpoint(layout.model_dirs("checkpoints")[0] / TINY_CHECKPOINT)
    make_tiny_checkpoint(layout.model_dirs("checkpoints")[0] / SD15_CHECKPOINT)  # the examples' SD1.5, tiny
    adapter = make_tiny_t2i_adapter(tmp_path / "adapter.safetensors")
    adapters = layout.model_dirs("controlnet")[1]  # models/t2i_adapter
    adapters.mkdir(parents=True, exist_ok=True)
    torch.save(load_file(adapter), adapters / T2I_DEPTH_ADAPTER)  # a .pth, as TencentARC's adapters are
    rgb = np.full((64, 64, 3), 255, dtype=np.uint8)
    rgb[16:48, 16:48] = 0
    Image.fromarray(rgb, "RGB").save(layout.input / "example.png")
    return layout


def test_area_composition_draws_each_prompt_in_its_half(models, library):
    result = run(prompt_of("area_composition.json", library), library)
    [path] = saved_files(result, models)
    image = pixels(path).astype(float)
    assert image.shape == (64, 128, 3)
    left, right = image[:, :64], image[:, 64:]
    # Only the areas' own prompts differ between the halves: red on the left, blue on the right.
    redness = lambda part: (part[..., 0] - part[..., 2]).mean()  # noqa: E731
    assert redness(left) > redness(right) + 20, (redness(left), redness(right))


def test_area_composition_areas_act_only_where_they_are(models, library):
    prompt = prompt_of("area_composition.json", library)
    base = pixels(saved_files(run(prompt, library), models)[0]).astype(float)
    areas = [n for n in prompt.values() if n["class_type"] == "ConditioningSetArea"]
    areas[1]["inputs"]["strength"] = 0.0  # the right area switched off
    changed = pixels(saved_files(run(prompt, library), models)[0]).astype(float)
    diff = np.abs(changed - base).mean(axis=(0, 2))
    assert diff[64:].mean() > 3 * diff[:48].mean(), (diff[:48].mean(), diff[64:].mean())


def test_t2i_adapter_workflow_runs_and_the_adapter_changes_the_picture(models, library):
    prompt = small(prompt_of("t2i_adapter.json", library))
    assert any(n["inputs"].get("ckpt_name") == SD15_CHECKPOINT for n in prompt.values())
    with_adapter = pixels(saved_files(run(prompt, library), models)[0])
    without = pixels(saved_files(run(set_input(prompt, "ControlNetApplyAdvanced", strength=0.0), library), models)[0])
    assert with_adapter.shape == (64, 64, 3) and with_adapter.std() > 0
    assert np.abs(with_adapter.astype(int) - without.astype(int)).mean() > 1.0


@pytest.fixture
def gligen_models(models):
    make_tiny_gligen(models.model_dirs("gligen")[0] / TINY_GLIGEN)
    make_tiny_gligen(models.model_dirs("gligen")[0] / GLIGEN_MODEL)  # the example's, tiny
    return models


def test_gligen_workflow_runs_and_the_boxes_change_the_picture(gligen_models, library):
    prompt = small(prompt_of("gligen.json", library))
    boxed = pixels(saved_files(run(prompt, library), gligen_models)[0])
    # the same graph with the boxes bypassed: the KSampler takes the prompt directly
    text_id = next(i for i, n in prompt.items() if n["class_type"] == "CLIPTextEncode"
                   and n["inputs"]["text"].startswith("a cat and"))
    plain_prompt = {i: n for i, n in prompt.items() if n["class_type"] not in ("GLIGENTextBoxApply", "GLIGENLoader")}
    set_input(plain_prompt, "KSampler", positive=[text_id, 0])
    plain = pixels(saved_files(run(plain_prompt, library), gligen_models)[0])
    assert boxed.shape == (64, 64, 3) and boxed.std() > 0
    assert np.abs(boxed.astype(int) - plain.astype(int)).mean() > 1.0


def test_gligen_box_apply_stores_comfyuis_entry_and_refuses_a_31st_box(gligen_models, library):
    from nodes.gligen import GLIGENLoader, GLIGENTextBoxApply
    from nodes.loaders import CheckpointLoaderSimple
    from nodegraph import NodeInputError

    _, clip, _ = CheckpointLoaderSimple().run(TINY_CHECKPOINT)
    (gligen,) = GLIGENLoader().run(TINY_GLIGEN)
    conditioning = [[torch.zeros(1, 77, 32), {}]]
    (one,) = GLIGENTextBoxApply().run(conditioning, clip, gligen, "a cat", 64, 32, 16, 8)
    kind, model, boxes = one[0][1]["gligen"]
    assert kind == "position" and model is gligen and len(boxes) == 1
    embedding, h, w, y, x = boxes[0]
    assert (h, w, y, x) == (4, 8, 1, 2) and embedding.shape == (1, 32)
    assert "gligen" not in conditioning[0][1]
    full = [[torch.zeros(1, 77, 32), {"gligen": ("position", gligen, [boxes[0]] * 30)}]]
    with pytest.raises(NodeInputError, match="at most 30"):
        GLIGENTextBoxApply().run(full, clip, gligen, "one more", 8, 8, 0, 0)


def test_hypernetwork_loader_patches_a_clone_and_strength_zero_is_the_plain_model(models, library, tmp_path):
    from tests.sd.test_hypernetwork import write_hypernetwork

    folder = models.model_dirs("hypernetworks")[0]
    folder.mkdir(parents=True, exist_ok=True)
    write_hypernetwork(folder / "tiny-hn.pt", "relu", True, structure=(1, 2, 1), seed=1)
    prompt = prompt_of("txt2img.json", library)
    ckpt_id = next(i for i, n in prompt.items() if n["class_type"] == "CheckpointLoaderSimple")
    prompt[ckpt_id]["inputs"]["ckpt_name"] = TINY_CHECKPOINT
    prompt["hn"] = {"class_type": "HypernetworkLoader",
                    "inputs": {"model": [ckpt_id, 0], "hypernetwork_name": "tiny-hn.pt", "strength": 1.0}}
    plain = pixels(saved_files(run(prompt, library), models)[0])
    set_input(prompt, "KSampler", model=["hn", 0])
    patched = pixels(saved_files(run(prompt, library), models)[0])
    prompt["hn"]["inputs"]["strength"] = 0.0
    zero = pixels(saved_files(run(prompt, library), models)[0])
    assert np.abs(patched.astype(int) - plain.astype(int)).mean() > 1.0
    assert np.array_equal(zero, plain)


def test_hypernetwork_loader_names_a_lora_file(models):
    from nodes.hypernetwork import HypernetworkLoader
    from nodes.sd.patcher import ModelPatcher
    from nodegraph import NodeInputError
    from safetensors.torch import save_file

    folder = models.model_dirs("hypernetworks")[0]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_a.lora_up.weight": torch.zeros(2, 2), "lora_unet_a.lora_down.weight": torch.zeros(2, 2)},
              str(folder / "style-lora.safetensors"))
    model = ModelPatcher(torch.nn.Linear(2, 2))
    with pytest.raises(NodeInputError, match=r"hypernetwork_name.*style-lora\.safetensors.*LoRA"):
        HypernetworkLoader().run(model, "style-lora.safetensors", 1.0)
