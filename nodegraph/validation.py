"""Validation of a prompt before anything runs, with ComfyUI's error types and JSON shape.

Every problem is collected (not just the first), each naming node id, class and input. Outputs
whose ancestors all pass are kept; the prompt is rejected only when no output is left, as ComfyUI
does. Constants come back coerced to their declared types.
"""
from __future__ import annotations

import difflib
import math
import traceback
from dataclasses import dataclass, field
from typing import Any

from .contract import WIDGET_TYPES, InputSpec, NodeDefinition, NodeSpecs, types_compatible
from .errors import NodeError, ValidationError
from .graph import DependencyGraph
from .registry import NodeRegistry
from .workflow.api_format import Prompt, is_link


@dataclass
class ValidatedPrompt:
    """A prompt that may run: coerced inputs, the outputs to produce, and the run order."""

    prompt: Prompt
    outputs: list[str]
    definitions: dict[str, NodeDefinition]  # by class name
    graph: DependencyGraph
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)  # outputs dropped


def validate_prompt(prompt: Prompt, registry: NodeRegistry, *, targets: list[str] | None = None) -> ValidatedPrompt:
    """Validate and coerce `prompt`; raise ValidationError listing every problem."""
    return _Validator(prompt, registry).run(targets)


class _Validator:
    def __init__(self, prompt: Prompt, registry: NodeRegistry):
        self.prompt = {nid: {**node, "inputs": dict(node.get("inputs", {}))} for nid, node in prompt.items()}
        self.registry = registry
        self.definitions: dict[str, NodeDefinition] = {}
        self.specs: dict[str, NodeSpecs] = {}
        self.errors: dict[str, list[NodeError]] = {}

    def run(self, targets: list[str] | None) -> ValidatedPrompt:
        unknown = self._check_classes()
        graph = DependencyGraph(self.prompt)
        if targets is not None:
            missing = [t for t in targets if t not in self.prompt]
            if missing:
                raise ValidationError(NodeError("invalid_prompt", "Cannot execute: unknown target nodes",
                                                ", ".join(f"#{t}" for t in missing)))
            outputs = [str(t) for t in targets]
        else:
            outputs = [nid for nid, node in self.prompt.items()
                       if node.get("class_type") in self.definitions and self.definitions[node["class_type"]].output_node]
        if not outputs and not unknown:
            raise ValidationError(NodeError("prompt_no_outputs", "Prompt has no outputs",
                                            "Add an output node such as Save Image or Preview Image."))

        needed = graph.ancestors(outputs)
        for node_id in needed:
            if node_id not in unknown:
                self._check_node(node_id)
        for node_id in graph.cycle_nodes(needed):
            self._add(node_id, NodeError("dependency_cycle", "Dependency cycle detected",
                                         "this node depends on its own output"))

        # An output is valid when neither it nor any ancestor has a problem of its own.
        tainted = graph.descendants(self.errors) & needed
        good = [o for o in outputs if o not in tainted]
        node_errors = self._node_errors_json(graph, outputs)
        if unknown:
            names = sorted({str(self.prompt[n].get("class_type")) for n in unknown if self.prompt[n].get("class_type")})
            if any(not self.prompt[n].get("class_type") for n in unknown):
                message = "Cannot execute because a node is missing the class_type property."
            elif len(names) == 1:
                message = f"Cannot execute because node {names[0]} does not exist."
            else:
                message = f"Cannot execute because nodes {', '.join(names)} do not exist."
            raise ValidationError(NodeError("invalid_prompt", message,
                                            ", ".join(f"Node ID '#{n}'" for n in sorted(unknown))), node_errors)
        if not good:
            details = "\n".join(f"{e.message}: {e.details}" for errs in self.errors.values() for e in errs)
            raise ValidationError(NodeError("prompt_outputs_failed_validation",
                                            "Prompt outputs failed validation", details), node_errors)
        return ValidatedPrompt(self.prompt, good, self.definitions, graph, node_errors)

    # -- problems ------------------------------------------------------------------------------

    def _add(self, node_id: str, error: NodeError) -> None:
        self.errors.setdefault(node_id, []).append(error)

    def _node_errors_json(self, graph: DependencyGraph, outputs: list[str]) -> dict[str, dict[str, Any]]:
        result = {}
        for node_id, errs in self.errors.items():
            dependents = graph.descendants([node_id])
            result[node_id] = {
                "errors": [e.to_json() for e in errs],
                "dependent_outputs": [o for o in outputs if o in dependents],
                "class_type": self.prompt[node_id].get("class_type"),
            }
        return result

    def _check_classes(self) -> set[str]:
        unknown = set()
        for node_id, node in self.prompt.items():
            class_type = node.get("class_type")
            definition = self.registry.get(class_type) if isinstance(class_type, str) else None
            if definition is None:
                unknown.add(node_id)
                hint = _closest(str(class_type), self.registry.names())
                self._add(node_id, NodeError(
                    "invalid_prompt",
                    "Node is missing the class_type property" if not class_type else f"Node type {class_type} does not exist",
                    f"Node ID '#{node_id}'" + (f"; did you mean {hint}?" if hint else
                                               "; is a custom node pack missing from custom_nodes/?"),
                    {"class_type": class_type}))
                continue
            self.definitions[class_type] = definition
            if class_type not in self.specs:
                try:
                    self.specs[class_type] = definition.specs()
                except Exception as exc:
                    unknown.add(node_id)
                    self._add(node_id, NodeError("exception_during_validation", "Exception when validating node",
                                                 f"INPUT_TYPES failed: {exc}"))
        return unknown

    def _check_node(self, node_id: str) -> None:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        definition, specs = self.definitions[class_type], self.specs[class_type]
        inputs = node["inputs"]
        custom = definition.validator is not None
        custom_names = set(s.name for s in specs.declared()) if definition.validator_params is None \
            else set(definition.validator_params)
        received_types: dict[str, str] = {}

        for spec in specs.declared():
            info = {"input_name": spec.name, "input_config": _config(spec)}
            if spec.name not in inputs or inputs[spec.name] is None:
                if spec.section == "required":
                    self._add(node_id, NodeError("required_input_missing", "Required input is missing",
                                                 spec.name, {"input_name": spec.name}))
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                if not is_link(value):
                    self._add(node_id, NodeError("bad_linked_input",
                                                 "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                                 spec.name, {**info, "received_value": value}))
                    continue
                received = self._check_link(node_id, spec, value, info,
                                            check_type=not (custom and "input_types" in custom_names))
                if received is not None:
                    received_types[spec.name] = received
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[spec.name] = value["__value__"]
            self._check_constant(node_id, spec, value, info, skip_rules=custom and spec.name in custom_names)

        if custom:
            self._run_custom(node_id, definition, specs, custom_names, received_types)

    def _check_link(self, node_id: str, spec: InputSpec, link: list, info: dict, check_type: bool) -> str | None:
        source, slot = str(link[0]), int(link[1])
        upstream = self.prompt.get(source)
        if upstream is None:
            self._add(node_id, NodeError("bad_linked_input", "Bad linked input, the linked node does not exist",
                                         f"{spec.name}: node '{source}' is not in the prompt",
                                         {**info, "linked_node": link}))
            return None
        up_def = self.definitions.get(upstream.get("class_type"))
        if up_def is None:
            return None  # the upstream node reports its own unknown class
        if not 0 <= slot < len(up_def.return_types):
            self._add(node_id, NodeError("bad_linked_input", "Bad linked input, the output slot does not exist",
                                         f"{spec.name}: node '{source}' ({up_def.name}) has {len(up_def.return_types)} "
                                         f"outputs, slot {slot} was asked for", {**info, "linked_node": link}))
            return None
        received = up_def.return_types[slot]
        expected = spec.type
        if check_type and not (types_compatible(received, expected) or (expected == "COMBO" and received in ("COMBO", "STRING"))):
            self._add(node_id, NodeError("return_type_mismatch", "Return type mismatch between linked nodes",
                                         f"{spec.name}, received_type({received}) mismatch input_type({expected})",
                                         {**info, "received_type": received, "linked_node": link}))
        return received

    def _check_constant(self, node_id: str, spec: InputSpec, value: Any, info: dict, skip_rules: bool) -> None:
        kind = spec.type
        if kind not in WIDGET_TYPES:
            if kind != "*":
                self._add(node_id, NodeError("invalid_input_type", f"Input expects a link from a node that outputs {kind}",
                                             f"{spec.name}: got the constant {value!r}", {**info, "received_value": value}))
            return
        if kind == "COMBO":
            if not skip_rules and value not in (spec.choices or ()):
                self._add(node_id, _not_in_list(spec, value, info))
            return
        try:
            coerced = _coerce(kind, value)
        except (TypeError, ValueError, OverflowError) as exc:
            self._add(node_id, NodeError("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                         f"{spec.name}, {value!r}, {exc}",
                                         {**info, "received_value": value, "exception_message": str(exc)}))
            return
        self.prompt[node_id]["inputs"][spec.name] = coerced
        if skip_rules or kind not in ("INT", "FLOAT"):
            return
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and coerced < low:
            self._add(node_id, NodeError("value_smaller_than_min", f"Value {coerced} smaller than min of {low}",
                                         spec.name, {**info, "received_value": value}))
        if high is not None and coerced > high:
            self._add(node_id, NodeError("value_bigger_than_max", f"Value {coerced} bigger than max of {high}",
                                         spec.name, {**info, "received_value": value}))

    def _run_custom(self, node_id: str, definition: NodeDefinition, specs: NodeSpecs,
                    names: set[str], received_types: dict[str, str]) -> None:
        inputs = self.prompt[node_id]["inputs"]
        kwargs = {n: (None if is_link(inputs.get(n)) else inputs.get(n))
                  for n in names if n != "input_types" and specs.get(n) is not None and n in inputs}
        if "input_types" in names:
            kwargs["input_types"] = received_types
        try:
            result = definition.validator(**kwargs)
        except Exception as exc:
            self._add(node_id, NodeError("exception_during_validation", "Exception when validating node", str(exc),
                                         {"exception_type": type(exc).__name__, "exception_message": str(exc),
                                          "traceback": traceback.format_exception(exc)}))
            return
        if result is not True:
            self._add(node_id, NodeError("custom_validation_failed", "Custom validation failed for node",
                                         f"{', '.join(sorted(kwargs)) or definition.name} - {result}",
                                         {"input_name": next(iter(sorted(kwargs)), None)}))


def _coerce(kind: str, value: Any) -> Any:
    if kind == "INT":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        if isinstance(value, str):
            return int(value.strip())
        return int(value)
    if kind == "FLOAT":
        result = float(value)
        if math.isnan(result):
            raise ValueError("NaN is not a number a node can use")
        return result
    if kind == "STRING":
        if isinstance(value, (dict, list)):
            raise TypeError(f"expected text, got a {type(value).__name__}")
        return str(value)
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"  # not Python truthiness: "false" means False
        raise ValueError(f"{value!r} is not true or false")
    return value


def _config(spec: InputSpec) -> list[Any]:
    kind: Any = list(spec.choices or ()) if spec.type == "COMBO" else spec.type
    return [kind, dict(spec.options)]


def _not_in_list(spec: InputSpec, value: Any, info: dict) -> NodeError:
    choices = [str(c) for c in spec.choices or ()]
    shown = f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)
    hint = _closest(str(value), choices)
    details = f"{spec.name}: '{value}' not in {shown}" + (f"; closest: {hint}" if hint else "")
    extra = {**info, "received_value": value}
    if len(choices) > 20:
        extra["input_config"] = None
    return NodeError("value_not_in_list", "Value not in list", details, extra)


def _closest(value: str, options: list[str]) -> str:
    # Compare file names without folders and case, so 'SD15.safetensors' finds 'sd/sd15.safetensors'.
    lowered = {o.lower().replace("\\", "/"): o for o in options}
    matches = difflib.get_close_matches(value.lower().replace("\\", "/"), list(lowered), n=3, cutoff=0.5)
    if not matches:
        tail = value.lower().replace("\\", "/").rsplit("/", 1)[-1]
        matches = [k for k in lowered if k.rsplit("/", 1)[-1] == tail][:3]
    return ", ".join(repr(lowered[m]) for m in matches)
