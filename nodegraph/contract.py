"""The node contract: how a node class declares its inputs, outputs and behaviour.

A node is written either with our declarative `Node` base class or in ComfyUI's v1 contract
(`INPUT_TYPES`, `RETURN_TYPES`, `FUNCTION`, ...). Both compile to one `NodeDefinition`, the only
shape the registry, validation, executor and `/object_info` ever see.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import RegistrationError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
HIDDEN_KINDS = frozenset({"PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID",
                          "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"})
ANY_TYPE = "*"
MAX_RESOLUTION = 16384


# --------------------------------------------------------------------------------------------
# Parsed input specs: what validation, the UI converter and the executor read.

@dataclass(frozen=True)
class InputSpec:
    """One declared input. `type` is a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO) or a
    socket type (MODEL, IMAGE, "IMAGE,MASK", "*"); `choices` is set for COMBO."""

    name: str
    type: str
    section: str  # "required" | "optional" | "hidden"
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        """Whether the editor shows this input as a widget (and `widgets_values` holds it)."""
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.choices:
            return self.choices[0]
        return None


@dataclass(frozen=True)
class NodeSpecs:
    required: tuple[InputSpec, ...]
    optional: tuple[InputSpec, ...]
    hidden: tuple[InputSpec, ...]

    def declared(self) -> tuple[InputSpec, ...]:
        """Required then optional inputs: the order of sockets and widgets."""
        return self.required + self.optional

    def get(self, name: str) -> InputSpec | None:
        for spec in self.required + self.optional + self.hidden:
            if spec.name == name:
                return spec
        return None


def parse_input_types(input_types: Mapping[str, Any], node_name: str = "?") -> NodeSpecs:
    """Parse a v1 `INPUT_TYPES()` dict into specs; raise RegistrationError on malformed entries."""
    if not isinstance(input_types, Mapping):
        raise RegistrationError(f"{node_name}: INPUT_TYPES must return a dict, got {type(input_types).__name__}")
    sections: dict[str, list[InputSpec]] = {"required": [], "optional": [], "hidden": []}
    for section in sections:
        entries = input_types.get(section) or {}
        if not isinstance(entries, Mapping):
            raise RegistrationError(f"{node_name}: INPUT_TYPES()['{section}'] must be a dict")
        for name, entry in entries.items():
            sections[section].append(_parse_entry(node_name, section, name, entry))
    return NodeSpecs(*(tuple(sections[s]) for s in ("required", "optional", "hidden")))


def _parse_entry(node_name: str, section: str, name: str, entry: Any) -> InputSpec:
    if section == "hidden":
        kind = entry[0] if isinstance(entry, (tuple, list)) and entry else entry
        return InputSpec(name, str(kind), "hidden")
    if isinstance(entry, str):  # tolerated shorthand: "MODEL"
        entry = (entry,)
    if not isinstance(entry, (tuple, list)) or not entry:
        raise RegistrationError(f"{node_name}: input '{name}' must be a (TYPE, options) tuple, got {entry!r}")
    kind, options = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {})
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", section, dict(options), tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, "COMBO", section, dict(options), tuple(options.get("options", ())))
    if not isinstance(kind, str):
        raise RegistrationError(f"{node_name}: input '{name}' has a type that is not a string: {kind!r}")
    return InputSpec(name, kind, section, dict(options))


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: equal, `*` on either side, or comma-separated type sets that intersect."""
    if output_type == input_type or ANY_TYPE in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


# --------------------------------------------------------------------------------------------
# The compiled definition.

@dataclass
class NodeDefinition:
    """Everything the engine knows about one node class."""

    name: str
    display_name: str
    category: str
    description: str
    python_module: str
    cls: type
    input_types: Callable[[], Mapping[str, Any]]  # re-evaluated: combos list current files
    return_types: tuple[str, ...]
    return_names: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    output_tooltips: tuple[str, ...] | None
    function: str
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False
    fingerprint: Callable[..., Any] | None = None
    validator: Callable[..., Any] | None = None
    validator_params: frozenset[str] | None = None  # None: takes **kwargs, i.e. every input

    def specs(self) -> NodeSpecs:
        return parse_input_types(self.input_types(), self.name)

    def new_instance(self) -> Any:
        return self.cls()

    def call(self, instance: Any, kwargs: dict[str, Any]) -> Any:
        result = getattr(instance, self.function)(**kwargs)
        if inspect.isawaitable(result):  # async FUNCTIONs run to completion on the worker
            import asyncio  # only for async nodes: kept out of a plain run's start-up

            result = asyncio.run(_await(result))
        return result

    def info(self) -> dict[str, Any]:
        """ComfyUI's NodeInfo shape, as `/object_info` and `nodegraph nodes --json` give it."""
        raw = self.input_types()
        specs = parse_input_types(raw, self.name)
        inputs: dict[str, Any] = {}
        order: dict[str, list[str]] = {}
        for section, group in (("required", specs.required), ("optional", specs.optional), ("hidden", specs.hidden)):
            if not group:
                continue
            inputs[section] = {s.name: _info_entry(s) for s in group}
            order[section] = [s.name for s in group]
        inputs.setdefault("required", {})
        info = {
            "input": inputs,
            "input_order": order,
            "output": list(self.return_types),
            "output_is_list": list(self.output_is_list),
            "output_name": list(self.return_names),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips:
            info["output_tooltips"] = list(self.output_tooltips)
        if self.deprecated:
            info["deprecated"] = True
        if self.experimental:
            info["experimental"] = True
        return info


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _info_entry(spec: InputSpec) -> Any:
    if spec.section == "hidden":
        return spec.type
    kind: Any = list(spec.choices or ()) if spec.type == "COMBO" else spec.type
    return [kind, dict(spec.options)]


# --------------------------------------------------------------------------------------------
# Our declarative contract.

@dataclass(frozen=True)
class InputDecl:
    """An input as a `Node` subclass declares it; `choices` may be a callable (files in a folder)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    optional: bool = False
    hidden: bool = False

    def to_v1(self) -> Any:
        if self.hidden:
            return self.type
        options = {k: v for k, v in self.options.items() if v is not None}
        if self.type == "COMBO":
            choices = self.choices() if callable(self.choices) else self.choices
            return (list(choices or ()), options)
        return (self.type, options) if options else (self.type,)


def Input(name: str, type: str, *, optional: bool = False, tooltip: str | None = None, **options: Any) -> InputDecl:
    """A socket input (MODEL, LATENT, IMAGE, ...)."""
    return InputDecl(name, type, {"tooltip": tooltip, **options}, optional=optional)


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None, step: int | None = None,
        control_after_generate: bool = False, optional: bool = False, tooltip: str | None = None, **options: Any) -> InputDecl:
    opts = {"default": default, "min": min, "max": max, "step": step, "tooltip": tooltip, **options}
    if control_after_generate:
        opts["control_after_generate"] = True
    return InputDecl(name, "INT", opts, optional=optional)


def Float(name: str, default: float = 0.0, *, min: float | None = None, max: float | None = None,
          step: float | None = None, round: float | None = None, optional: bool = False,
          tooltip: str | None = None, **options: Any) -> InputDecl:
    return InputDecl(name, "FLOAT", {"default": default, "min": min, "max": max, "step": step, "round": round,
                                     "tooltip": tooltip, **options}, optional=optional)


def String(name: str, default: str = "", *, multiline: bool = False, dynamic_prompts: bool | None = None,
           optional: bool = False, tooltip: str | None = None, **options: Any) -> InputDecl:
    opts: dict[str, Any] = {"default": default, "tooltip": tooltip, **options}
    if multiline:
        opts["multiline"] = True
    if dynamic_prompts is not None:
        opts["dynamicPrompts"] = dynamic_prompts
    return InputDecl(name, "STRING", opts, optional=optional)


def Boolean(name: str, default: bool = False, *, optional: bool = False, tooltip: str | None = None,
            **options: Any) -> InputDecl:
    return InputDecl(name, "BOOLEAN", {"default": default, "tooltip": tooltip, **options}, optional=optional)


def Combo(name: str, choices: Sequence[Any] | Callable[[], Sequence[Any]], *, default: Any = None,
          optional: bool = False, tooltip: str | None = None, **options: Any) -> InputDecl:
    return InputDecl(name, "COMBO", {"default": default, "tooltip": tooltip, **options}, choices=choices,
                     optional=optional)


def Hidden(name: str, kind: str) -> InputDecl:
    """An input the engine injects: PROMPT, EXTRA_PNGINFO, UNIQUE_ID, DYNPROMPT."""
    if kind not in HIDDEN_KINDS:
        raise RegistrationError(f"unknown hidden input kind {kind!r}; use one of {sorted(HIDDEN_KINDS)}")
    return InputDecl(name, kind, hidden=True)


@dataclass(frozen=True)
class Output:
    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False


@dataclass
class NodeOutput:
    """What `run` may return instead of a plain tuple, to add UI data (images to show)."""

    values: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class Node:
    """Base class of our nodes. Subclasses declare `inputs` / `outputs` and implement `run`.

    Optional classmethods: `fingerprint(**constant_inputs)` — a value that changes when external
    state (a file) changes, so the cache re-runs the node; `validate(**inputs)` — True or a message.
    The class docstring becomes the description; `display_name` defaults to the class name.
    """

    display_name: str | None = None
    category: str = "utils"
    inputs: Sequence[InputDecl] = ()
    outputs: Sequence[Output] = ()
    output_node: bool = False
    input_is_list: bool = False  # run once with every input as a whole list (ComfyUI's INPUT_IS_LIST)
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False

    def run(self, **inputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Compilation of a class into a definition.

def define(cls: type, name: str | None = None, *, display_name: str | None = None,
           python_module: str | None = None) -> NodeDefinition:
    """Compile a node class (ours or ComfyUI v1) into a NodeDefinition, checking the contract."""
    name = name or cls.__name__
    module = python_module or _module_of(cls)
    if isinstance(cls, type) and issubclass(cls, Node):
        return _define_declarative(cls, name, display_name, module)
    if hasattr(cls, "INPUT_TYPES") and hasattr(cls, "FUNCTION"):
        return _define_v1(cls, name, display_name, module)
    raise RegistrationError(
        f"{name}: not a node class. Subclass nodegraph.Node, or give the class INPUT_TYPES, "
        f"RETURN_TYPES and FUNCTION as in ComfyUI's node contract.")


def _module_of(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    if module.startswith("custom_nodes."):
        return ".".join(module.split(".")[:2])
    return module or "nodes"


def _define_declarative(cls: type[Node], name: str, display_name: str | None, module: str) -> NodeDefinition:
    decls = list(cls.inputs)
    seen: set[str] = set()
    for decl in decls:
        if not isinstance(decl, InputDecl):
            raise RegistrationError(f"{name}: inputs must be made with Input/Int/Float/String/Boolean/Combo/Hidden, got {decl!r}")
        if decl.name in seen:
            raise RegistrationError(f"{name}: input '{decl.name}' is declared twice")
        seen.add(decl.name)

    def input_types() -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {"required": {}}
        for decl in decls:
            section = "hidden" if decl.hidden else "optional" if decl.optional else "required"
            out.setdefault(section, {})[decl.name] = decl.to_v1()
        return out

    outputs = list(cls.outputs)
    fingerprint = getattr(cls, "fingerprint", None)
    validator = getattr(cls, "validate", None)
    return NodeDefinition(
        name=name,
        display_name=display_name or cls.display_name or name,
        category=cls.category,
        description=inspect.cleandoc(cls.__doc__ or ""),
        python_module=module,
        cls=cls,
        input_types=input_types,
        return_types=tuple(o.type for o in outputs),
        return_names=tuple(o.name or o.type for o in outputs),
        output_is_list=tuple(o.is_list for o in outputs),
        output_tooltips=tuple(o.tooltip or "" for o in outputs) if any(o.tooltip for o in outputs) else None,
        function="run",
        output_node=bool(cls.output_node),
        input_is_list=bool(cls.input_is_list),
        not_idempotent=bool(cls.not_idempotent),
        deprecated=bool(cls.deprecated),
        experimental=bool(cls.experimental),
        fingerprint=fingerprint,
        validator=validator,
        validator_params=_param_names(validator),
    )


def _define_v1(cls: type, name: str, display_name: str | None, module: str) -> NodeDefinition:
    return_types = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    if not all(isinstance(t, (str, list)) for t in return_types):
        raise RegistrationError(f"{name}: RETURN_TYPES must be a tuple of type names")
    return_types = tuple("COMBO" if isinstance(t, list) else t for t in return_types)
    return_names = tuple(getattr(cls, "RETURN_NAMES", None) or return_types)
    output_is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * len(return_types))
    function = getattr(cls, "FUNCTION")
    if not hasattr(cls, function):
        raise RegistrationError(f"{name}: FUNCTION names '{function}', which the class does not define")
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    validator = getattr(cls, "VALIDATE_INPUTS", None)
    return NodeDefinition(
        name=name,
        display_name=display_name or name,
        category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", "") or "",
        python_module=module,
        cls=cls,
        input_types=cls.INPUT_TYPES,
        return_types=return_types,
        return_names=return_names,
        output_is_list=output_is_list,
        output_tooltips=tuple(tooltips) if tooltips else None,
        function=function,
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        fingerprint=getattr(cls, "IS_CHANGED", None),
        validator=validator,
        validator_params=_param_names(validator),
    )


def _param_names(fn: Callable[..., Any] | None) -> frozenset[str] | None:
    """Names a validator takes; None when it takes **kwargs (i.e. all inputs)."""
    if fn is None:
        return frozenset()
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name not in ("self", "cls"))


def split_result(result: Any, n_outputs: int) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Normalise a node's return value to (output values, ui dict or None)."""
    if isinstance(result, NodeOutput):
        return tuple(result.values), result.ui
    if isinstance(result, dict):
        if "expand" in result:
            raise NotImplementedError("node expansion ('expand' results) is not supported yet")
        values = result.get("result", ())
        return tuple(values or ()), result.get("ui")
    if result is None:
        return (), None
    if isinstance(result, tuple):
        return result, None
    if isinstance(result, list):
        return tuple(result), None
    if n_outputs == 1:  # a lone value where a 1-tuple was meant
        return (result,), None
    raise TypeError(f"a node must return a tuple of {n_outputs} outputs, got {type(result).__name__}")


def iter_unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
