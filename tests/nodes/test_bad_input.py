"""Bad input at the node level: each failure names the node, the input and the file, and the
executor stops cleanly (the next prompt runs fine)."""
import pytest
import torch
from safetensors.torch import save_file

from nodegraph import Executor, OutputCache, validate_prompt
from nodes.default_model import DEFAULT_CHECKPOINT, ensure_default_checkpoint


def run(prompt, library, targets):
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, library, targets=targets))


def loader(name):
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}


def assert_blames(result, node_id, node_type, input_name, *fragments):
    assert result.status == "error", result.status
    error = result.error
    assert (error.node_id, error.node_type, error.input_name) == (node_id, node_type, input_name)
    for fragment in fragments:
        assert fragment in error.exception_message, error.exception_message
    data = dict(result.messages)["execution_error"]
    assert data["input_name"] == input_name and data["node_id"] == node_id


def test_truncated_checkpoint(layout, library):
    good = ensure_default_checkpoint(layout)
    folder = layout.models[0] / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cut.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run(loader("cut.safetensors"), library, ["1"])
    assert_blames(result, "1", "CheckpointLoaderSimple", "ckpt_name", "cut.safetensors")


def test_not_an_sd_checkpoint(layout, library):
    folder = layout.models[0] / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(folder / "bert.safetensors"))
    result = run(loader("bert.safetensors"), library, ["1"])
    assert_blames(result, "1", "CheckpointLoaderSimple", "ckpt_name", "bert.safetensors")


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned-marker",))


def test_pickle_payload_is_never_executed(layout, library, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = layout.models[0] / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"x": _Exploit()}}, folder / "evil.ckpt")
    result = run(loader("evil.ckpt"), library, ["1"])
    assert_blames(result, "1", "CheckpointLoaderSimple", "ckpt_name", "evil.ckpt")
    assert not (tmp_path / "pwned-marker").exists()


def test_image_that_does_not_decode(layout, library):
    (layout.input / "fake.png").write_bytes(b"GIF89a not an image at all")
    result = run({"1": {"class_type": "LoadImage", "inputs": {"image": "fake.png"}}}, library, ["1"])
    assert_blames(result, "1", "LoadImage", "image", "fake.png")


def test_latent_with_wrong_channels_and_size_not_multiple_of_8(layout, library):
    ensure_default_checkpoint(layout)
    prompt = {**loader(DEFAULT_CHECKPOINT),
              "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 100, "height": 64, "batch_size": 1}}}
    assert_blames(run(prompt, library, ["2"]), "2", "EmptyLatentImage", "width", "100 is not a multiple of 8")

    class ThreeChannels:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "go"

        def go(self):
            return ({"samples": torch.zeros(1, 3, 8, 8)},)

    from nodegraph import NodeRegistry
    registry = NodeRegistry()
    registry.register_all({d.name: d.cls for d in library})
    registry.register(ThreeChannels, "ThreeChannels")
    prompt = {**loader(DEFAULT_CHECKPOINT), "2": {"class_type": "ThreeChannels", "inputs": {}},
              "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}}}
    result = run(prompt, registry, ["3"])
    assert_blames(result, "3", "VAEDecode", "samples", "4 channels", "(1, 3, 8, 8)")


def test_lora_for_another_architecture(layout, library):
    ensure_default_checkpoint(layout)
    folder = layout.models[0] / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(8, 4),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8)},
              str(folder / "flux_style.safetensors"))
    prompt = {**loader(DEFAULT_CHECKPOINT),
              "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                           "lora_name": "flux_style.safetensors",
                                                           "strength_model": 1.0, "strength_clip": 1.0}}}
    assert_blames(run(prompt, library, ["2"]), "2", "LoraLoader", "lora_name", "flux_style.safetensors")


def test_missing_model_file_fails_validation_with_suggestion(layout, library):
    ensure_default_checkpoint(layout)
    with pytest.raises(Exception) as info:
        validate_prompt(loader("nodegraph-dmo.safetensors"), library, targets=["1"])
    assert "closest: 'nodegraph-demo.safetensors'" in str(info.value)


def test_controlnet_file_that_is_a_checkpoint(layout, library):
    path = ensure_default_checkpoint(layout)
    folder = layout.models[0] / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "not_a_controlnet.safetensors").write_bytes(path.read_bytes())
    prompt = {"1": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "not_a_controlnet.safetensors"}}}
    assert_blames(run(prompt, library, ["1"]), "1", "ControlNetLoader", "control_net_name",
                  "not_a_controlnet.safetensors")
