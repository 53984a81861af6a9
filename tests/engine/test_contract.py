"""The node contract: NodeInfo shape, v1 classes, registration errors, custom node packs."""
import json
import textwrap

import pytest

from nodegraph import Combo, Hidden, Int, Node, NodeRegistry, Output
from nodegraph.errors import RegistrationError

NODEINFO_KEYS = {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
                 "description", "python_module", "category", "output_node"}


def test_declarative_node_info_shape(registry):
    info = registry.get("Seeded").info()
    assert NODEINFO_KEYS <= set(info)
    assert info["input"]["required"]["seed"] == ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                                         "control_after_generate": True}]
    assert info["input"]["required"]["mode"] == [["sum", "product"], {}]
    assert info["input"]["required"]["a"] == ["FLOAT", {"forceInput": True}]
    assert info["input_order"] == {"required": ["a", "seed", "steps", "mode"]}
    assert info["output"] == ["FLOAT"] and info["output_name"] == ["FLOAT"] and info["output_is_list"] == [False]
    assert info["category"] == "math" and info["output_node"] is False
    assert registry.get("Show").info()["output_node"] is True
    assert registry.get("Number").info()["description"] == "A constant number."
    json.dumps(registry.object_info())  # the whole thing is JSON


def test_v1_node_info(registry):
    info = registry.get("V1Scale").info()
    assert info["display_name"] == "Scale (v1)" and info["category"] == "v1"
    assert info["output_name"] == ["scaled"] and info["description"] == "Scales a number."
    assert info["input"]["optional"] == {"offset": ["FLOAT", {"default": 0.0}]}
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}
    assert info["input_order"] == {"required": ["a", "scale", "rounding"], "optional": ["offset"],
                                   "hidden": ["unique_id", "prompt"]}


def test_combo_choices_are_reevaluated():
    files = ["a.safetensors"]

    class Loader(Node):
        inputs = (Combo("name", lambda: list(files)),)
        outputs = (Output("MODEL"),)

    definition = NodeRegistry().register(Loader)
    assert definition.info()["input"]["required"]["name"][0] == ["a.safetensors"]
    files.append("b.safetensors")
    assert definition.specs().required[0].choices == ("a.safetensors", "b.safetensors")


@pytest.mark.parametrize("cls, message", [
    (type("NotANode", (), {}), "not a node class"),
    (type("BadFunction", (), {"INPUT_TYPES": classmethod(lambda c: {}), "FUNCTION": "nope", "RETURN_TYPES": ()}),
     "FUNCTION names 'nope'"),
])
def test_registration_errors(cls, message):
    with pytest.raises(RegistrationError, match=message):
        NodeRegistry().register(cls)


def test_duplicate_input_and_bad_declarations():
    class Twice(Node):
        inputs = (Int("x"), Int("x"))
    with pytest.raises(RegistrationError, match="declared twice"):
        NodeRegistry().register(Twice)
    with pytest.raises(RegistrationError, match="unknown hidden input kind"):
        Hidden("x", "SECRET")


def test_custom_nodes_folder(tmp_path):
    pack = tmp_path / "custom_nodes"
    (pack / "my_pack").mkdir(parents=True)
    (pack / "my_pack" / "__init__.py").write_text(textwrap.dedent("""
        from .impl import Upper
        NODE_CLASS_MAPPINGS = {"Upper": Upper}
        NODE_DISPLAY_NAME_MAPPINGS = {"Upper": "To upper case"}
    """))
    (pack / "my_pack" / "impl.py").write_text(textwrap.dedent("""
        class Upper:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"text": ("STRING", {"default": "hi"})}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            CATEGORY = "text"
            def go(self, text):
                return (text.upper(),)
    """))
    (pack / "single.py").write_text("class N:\n    pass\nNODE_CLASS_MAPPINGS = {'N': N}\n")  # broken pack
    (pack / "crashing.py").write_text("raise ImportError('needs a package you do not have')\n")
    (pack / "off.py.disabled").write_text("raise SystemExit")
    registry = NodeRegistry()
    report = registry.load_custom_nodes(pack)
    assert report.loaded == {"my_pack": ["Upper"]}
    assert set(report.failed) == {"single", "crashing"} and "needs a package" in report.failed["crashing"]
    info = registry.get("Upper").info()
    assert info["display_name"] == "To upper case" and info["python_module"] == "custom_nodes.my_pack"
    from nodegraph import Executor, OutputCache, validate_prompt
    prompt = {"1": {"class_type": "Upper", "inputs": {"text": "abc"}}}
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry, targets=["1"]))
    assert result.ok
