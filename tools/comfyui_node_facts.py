"""Reads the node declarations of a ComfyUI checkout (facts only: class names, input names, types,
defaults, ranges, outputs) into JSON, for comparing our library with ComfyUI's.

    python tools/comfyui_node_facts.py /path/to/ComfyUI ClassA ClassB ... > facts.json

Both declaration styles are read without importing ComfyUI: v1 classes (`INPUT_TYPES` returning a
dict literal, `RETURN_TYPES`, `RETURN_NAMES`) and v3 `io.Schema(...)` declarations. Values that are not
literals (file lists, computed options) are recorded as "<dynamic>". No ComfyUI code is copied: the
output holds names and numbers only.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

V3_TYPES = {"Latent": "LATENT", "Image": "IMAGE", "Mask": "MASK", "Int": "INT", "Float": "FLOAT", "String": "STRING",
            "Boolean": "BOOLEAN", "Combo": "COMBO", "Model": "MODEL", "LatentOperation": "LATENT_OPERATION",
            "Conditioning": "CONDITIONING", "Clip": "CLIP", "Vae": "VAE", "AnyType": "*"}
CONSTANTS = {"MAX_RESOLUTION": 16384}
DYNAMIC = "<dynamic>"


class _Namespace(dict):
    def __missing__(self, key):
        raise NameError(key)


def _literal(node: ast.AST, names: dict) -> object:
    """Evaluate a literal-ish expression (constants, lists, dicts, MAX_RESOLUTION, IO.X, -x, x * y)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k, names): _literal(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, names)
        return -value if isinstance(value, (int, float)) else DYNAMIC
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.Pow)):
        a, b = _literal(node.left, names), _literal(node.right, names)
        try:
            return {ast.Mult: lambda: a * b, ast.Add: lambda: a + b, ast.Sub: lambda: a - b,
                    ast.Pow: lambda: a ** b}[type(node.op)]()
        except TypeError:  # a dynamic part
            return DYNAMIC
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Attribute):
        if node.attr in CONSTANTS:
            return CONSTANTS[node.attr]
        if isinstance(node.value, ast.Name) and node.value.id == "IO":
            return "*" if node.attr == "ANY" else node.attr  # comfy_types.IO: names equal their values
        if isinstance(node.value, ast.Name) and node.value.id in ("s", "cls") and node.attr in names:
            return names[node.attr]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "list" and node.args:
        value = _literal(node.args[0], names)
        return list(value) if not isinstance(value, str) else DYNAMIC
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "keys":
        value = _literal(node.func.value, names)
        return list(value) if isinstance(value, dict) else DYNAMIC
    return DYNAMIC


def _class_literals(cls: ast.ClassDef) -> dict:
    out = dict(CONSTANTS)
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            value = _literal(stmt.value, out)
            if value != DYNAMIC:
                out[stmt.targets[0].id] = value
    return out


def _v1(cls: ast.ClassDef, bases: dict[str, dict]) -> dict | None:
    names = _class_literals(cls)
    facts: dict = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "INPUT_TYPES":
            returns = [n for n in ast.walk(stmt) if isinstance(n, ast.Return)]
            spec = _literal(returns[-1].value, names) if returns else DYNAMIC
            if isinstance(spec, dict):
                facts["input"] = {section: {k: _entry(v) for k, v in (spec.get(section) or {}).items()}
                                  for section in ("required", "optional") if isinstance(spec.get(section), dict)}
    for key in ("RETURN_TYPES", "RETURN_NAMES"):
        if key in names:
            facts[key.lower()] = list(names[key])
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in bases:
            facts = {**bases[base.id], **facts}
    return facts or None


def _entry(value) -> list:
    if not isinstance(value, list) or not value:
        return [DYNAMIC, {}]
    kind = value[0]
    options = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
    if isinstance(kind, list):
        return ["COMBO", {**options, "options": kind}]
    return [kind, options]


def _v3(call: ast.Call) -> tuple[str, dict] | None:
    kwargs = {k.arg: k.value for k in call.keywords}
    node_id = _literal(kwargs.get("node_id"), {}) if "node_id" in kwargs else None
    if not isinstance(node_id, str):
        return None
    inputs: dict = {"required": {}, "optional": {}}
    for item in getattr(kwargs.get("inputs"), "elts", []):
        if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute) and item.func.attr == "Input"):
            continue
        kind = V3_TYPES.get(getattr(item.func.value, "attr", ""), DYNAMIC)
        name = _literal(item.args[0], CONSTANTS) if item.args else DYNAMIC
        options = {k.arg: _literal(k.value, CONSTANTS) for k in item.keywords}
        section = "optional" if options.pop("optional", False) else "required"
        inputs[section][name] = [kind, options]
    outputs = []
    for item in getattr(kwargs.get("outputs"), "elts", []):
        if isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute):
            outputs.append(V3_TYPES.get(getattr(item.func.value, "attr", ""), DYNAMIC))
    return node_id, {"input": {k: v for k, v in inputs.items() if v}, "return_types": outputs}


def read_facts(root: Path, wanted: set[str]) -> dict[str, dict]:
    facts: dict[str, dict] = {}
    files = [root / "nodes.py", *sorted((root / "comfy_extras").glob("nodes_*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        v1_classes: dict[str, dict] = {}
        mapping: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found = _v1(node, v1_classes)
                if found:
                    v1_classes[node.name] = found
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Schema":
                v3 = _v3(node)
                if v3 and v3[0] in wanted:
                    facts[v3[0]] = v3[1]
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NODE_CLASS_MAPPINGS" for t in node.targets):
                if isinstance(node.value, ast.Dict):
                    for k, v in zip(node.value.keys, node.value.values):
                        if isinstance(k, ast.Constant) and isinstance(v, ast.Name):
                            mapping[k.value] = v.id
        for name, cls in mapping.items():
            if name in wanted and cls in v1_classes and name not in facts:
                facts[name] = v1_classes[cls]
    return facts


if __name__ == "__main__":
    json.dump(read_facts(Path(sys.argv[1]), set(sys.argv[2:])), sys.stdout, indent=1)
    print()
