"""End to end: the area-composition example on the demo model and the T2I-Adapter example on tiny random
stand-ins generated here into the test's models folder; what each part contributes is checked by switching it off."""
import numpy as np
import pytest
from PIL import Image

from nodegraph.workflow.document import document_from_json
from nodes.default_model import ensure_default_checkpoint
from nodes.sd.tiny import make_tiny_checkpoint
from nodes.sd.tiny_adapters import TINY_T2I_ADAPTER, make_tiny_t2i_adapter
from tests.tiny_models import TINY_CHECKPOINT

from .test_workflows import STEPS, pixels, prompt_of, run, saved_files


def set_input(prompt, class_type, **values):
    for node in prompt.values():
        if node["class_type"] == class_type:
            node["inputs"].update(values)
    return prompt


@pytest.fixture
def models(layout):
    ensure_default_checkpoint(layout)
    make_tiny_checkpoint(layout.model_dirs("checkpoints")[0] / TINY_CHECKPOINT)
    make_tiny_t2i_adapter(layout.model_dirs("controlnet")[1] / TINY_T2I_ADAPTER)  # models/t2i_adapter
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
    from tools.build_workflows import t2i_adapter  # not a shipped example: it needs random stand-ins

    prompt = document_from_json(t2i_adapter(TINY_CHECKPOINT), "t2i_adapter").to_api(library)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = STEPS
    assert any(n["inputs"].get("ckpt_name") == TINY_CHECKPOINT for n in prompt.values())
    with_adapter = pixels(saved_files(run(prompt, library), models)[0])
    without = pixels(saved_files(run(set_input(prompt, "ControlNetApplyAdvanced", strength=0.0), library), models)[0])
    assert with_adapter.shape == (64, 64, 3) and with_adapter.std() > 0
    assert np.abs(with_adapter.astype(int) - without.astype(int)).mean() > 1.0
