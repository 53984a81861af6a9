"""The adapter loaders given the wrong file, through the executor: the error names the node, the input, the
file and what the file looks like instead; a truncated file and a pickle payload are refused (nothing runs)."""
import pytest
import torch
from safetensors.torch import save_file

from nodegraph import Executor, OutputCache, validate_prompt
from tests.tiny_models import TINY_CHECKPOINT
from nodes.sd.tiny import make_tiny_checkpoint

from .test_bad_input import assert_blames

# loader class, its file input, the folder kind, whether it needs a MODEL input
LOADERS = [("HypernetworkLoader", "hypernetwork_name", "hypernetworks", True),
           ("GLIGENLoader", "gligen_name", "gligen", False),
           ("StyleModelLoader", "style_model_name", "style_models", False),
           ("CLIPVisionLoader", "clip_name", "clip_vision", False),
           ("DiffControlNetLoader", "control_net_name", "controlnet", True),
           ("ControlNetLoader", "control_net_name", "controlnet", False)]
LORA = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(4, 2),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 4)}
SDXL = {"conditioner.embedders.1.model.ln_final.weight": torch.zeros(4),
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}


def run(layout, library, node, input_name, kind, needs_model, filename):
    prompt = {"2": {"class_type": node, "inputs": {input_name: filename}}}
    if needs_model:
        make_tiny_checkpoint(layout.model_dirs("checkpoints")[0] / TINY_CHECKPOINT)
        prompt["1"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT}}
        prompt["2"]["inputs"]["model"] = ["1", 0]
        if node == "HypernetworkLoader":
            prompt["2"]["inputs"]["strength"] = 1.0
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, library, targets=["2"]))


def place(layout, kind, name, data=None, raw=None):
    folder = layout.model_dirs(kind)[0]
    folder.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        (folder / name).write_bytes(raw)
    elif name.endswith(".pt"):
        torch.save(data, folder / name)
    else:
        save_file(data, str(folder / name))


@pytest.mark.parametrize("node, input_name, kind, needs_model", LOADERS)
@pytest.mark.parametrize("filename, data, looks_like", [("style-lora.safetensors", LORA, "LoRA"),
                                                         ("sdxl-base.safetensors", SDXL, "SDXL")])
def test_a_file_of_another_kind_is_named(layout, library, node, input_name, kind, needs_model, filename, data, looks_like):
    place(layout, kind, filename, data)
    result = run(layout, library, node, input_name, kind, needs_model, filename)
    assert_blames(result, "2", node, input_name, filename, looks_like)


@pytest.mark.parametrize("node, input_name, kind, needs_model", LOADERS)
def test_truncated_and_pickled_files_are_refused_and_run_nothing(layout, library, tmp_path, node, input_name, kind,
                                                                 needs_model):
    torch.save({"weights": torch.zeros(1000)}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    place(layout, kind, "cut.pt", raw=whole[: len(whole) // 2])
    result = run(layout, library, node, input_name, kind, needs_model, "cut.pt")
    assert_blames(result, "2", node, input_name, "cut.pt", "truncated")

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle
    place(layout, kind, "evil.pt", raw=pickle.dumps({"x": Payload(), 768: [Payload(), {}]}, protocol=2))
    result = run(layout, library, node, input_name, kind, needs_model, "evil.pt")
    assert_blames(result, "2", node, input_name, "evil.pt", "NOT unpickled")
    assert not marker.exists()
