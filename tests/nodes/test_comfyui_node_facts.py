"""The latent / image / mask / string nodes declare what ComfyUI 0.3.64 declares: same class, input
names in the same order (widgets_values are positional), types, defaults, ranges, optional inputs
and output types. The facts (data/comfyui_0364_node_facts.json) were read from ComfyUI 0.3.64's source
by tools/comfyui_node_facts.py (names and numbers only)."""
import json
from pathlib import Path

import pytest

FACTS = json.loads((Path(__file__).with_name("data") / "comfyui_0364_node_facts.json").read_text())
DYNAMIC = "<dynamic>"
NOT_BUILT: dict[str, str] = {}  # class -> why it is not built yet
OPTION_KEYS = ("default", "min", "max", "step", "multiline", "display", "image_upload", "image_folder")


def _type(entry) -> str:
    kind = entry[0]
    return "COMBO" if isinstance(kind, list) else kind


def _options(entry) -> dict:
    options = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if isinstance(entry[0], list):
        options["options"] = list(entry[0])
    return options


def differences(name: str, ours: dict, facts: dict) -> list[str]:
    """What in our /object_info entry differs from ComfyUI's declaration."""
    problems = []
    for section in ("required", "optional"):
        theirs = facts.get("input", {}).get(section, {})
        mine = ours["input"].get(section, {})
        if list(mine) != list(theirs):
            problems.append(f"{section} inputs {list(mine)} != {list(theirs)}")
            continue
        for input_name, their_entry in theirs.items():
            mine_entry = mine[input_name]
            if their_entry[0] != DYNAMIC and _type(mine_entry) != their_entry[0]:
                problems.append(f"{input_name}: type {_type(mine_entry)} != {their_entry[0]}")
            their_options, my_options = their_entry[1], _options(mine_entry)
            for key in OPTION_KEYS + ("options",):
                if key in their_options and their_options[key] != DYNAMIC and my_options.get(key) != their_options[key]:
                    problems.append(f"{input_name}.{key}: {my_options.get(key)!r} != {their_options[key]!r}")
    if "return_types" in facts and list(ours["output"]) != facts["return_types"]:
        problems.append(f"outputs {ours['output']} != {facts['return_types']}")
    if "return_names" in facts and list(ours["output_name"]) != facts["return_names"]:
        problems.append(f"output names {ours['output_name']} != {facts['return_names']}")
    return problems


@pytest.mark.parametrize("name", sorted(FACTS))
def test_node_declared_as_in_comfyui(library, name):
    if name in NOT_BUILT:
        assert library.get(name) is None
        pytest.skip(f"{name} not built: {NOT_BUILT[name]}")
    definition = library.get(name)
    assert definition is not None, f"{name} is missing"
    assert differences(name, definition.info(), FACTS[name]) == []


def test_the_comparison_catches_a_difference(library):
    info = library.get("LatentCrop").info()
    wrong = json.loads(json.dumps(info))
    wrong["input"]["required"]["width"][1]["default"] = 256
    assert differences("LatentCrop", wrong, FACTS["LatentCrop"]) == ["width.default: 256 != 512"]
    swapped = dict(info, input={"required": dict(reversed(list(info["input"]["required"].items())))})
    assert differences("LatentCrop", swapped, FACTS["LatentCrop"])[0].startswith("required inputs")
