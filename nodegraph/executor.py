"""The executor: runs a validated prompt, reusing cached subgraphs, and reports what happens.

Per prompt: compute cache keys; the output nodes' ancestors that are not cached run in
topological order (ties towards outputs); events go to a sink; a cancellation token is checked
between nodes and by long nodes. One prompt at a time per executor (the server has one worker).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from .cache import OutputCache
from .cache_keys import compute_cache_keys
from .contract import NodeDefinition, NodeSpecs, split_result
from .errors import ExecutionInterrupted, NodeExecutionError
from .progress import CancellationToken, EventSink, NodeContext, node_context
from .validation import ValidatedPrompt
from .workflow.api_format import is_link

log = logging.getLogger(__name__)

# Messages kept in the history entry (ComfyUI keeps these, not per-node ones).
HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> ui dict
    executed: list[str] = field(default_factory=list)  # nodes that ran in this prompt
    cached: list[str] = field(default_factory=list)  # nodes served from the cache
    error: NodeExecutionError | None = None
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seconds: float = 0.0
    cache_keys: dict[str, str] = field(default_factory=dict)  # node id -> its cache key
    node_seconds: dict[str, float] = field(default_factory=dict)  # node id -> time it ran (executed nodes)

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    def __init__(self, cache: OutputCache | None = None):
        self.cache = cache if cache is not None else OutputCache()
        self._instances: dict[tuple[str, str], Any] = {}  # (node id, class) -> node object, reused
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget cached outputs and node objects (`/free` with free_memory)."""
        self.cache.clear()
        self._instances.clear()

    def execute(self, validated: ValidatedPrompt, *, prompt_id: str | None = None,
                extra_data: dict[str, Any] | None = None, sink: EventSink | None = None,
                token: CancellationToken | None = None) -> RunResult:
        with self._lock:
            return _Run(self, validated, prompt_id or uuid.uuid4().hex, extra_data or {}, sink,
                        token or CancellationToken()).run()


class _Run:
    def __init__(self, executor: Executor, validated: ValidatedPrompt, prompt_id: str,
                 extra_data: dict[str, Any], sink: EventSink | None, token: CancellationToken):
        self.executor, self.validated = executor, validated
        self.prompt, self.graph = validated.prompt, validated.graph
        self.prompt_id, self.extra_data, self.sink, self.token = prompt_id, extra_data, sink, token
        self.result = RunResult(prompt_id, "success")
        self.values: dict[str, list[list[Any]]] = {}

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if event in HISTORY_EVENTS:
            self.result.messages.append((event, data))
        if self.sink is not None:
            try:
                self.sink(event, data)
            except Exception:  # a broken listener must not break the run
                log.exception("event sink failed on %s", event)

    def run(self) -> RunResult:
        started = time.perf_counter()
        cache = self.executor.cache
        outputs = self.validated.outputs
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        current: str | None = None
        try:
            keys = self.result.cache_keys = compute_cache_keys(self.prompt, self.validated.definitions, self.graph,
                                                               outputs)
            entries = {n: e for n in keys if cache.enabled and (e := cache.get(keys[n])) is not None}
            walk = self.graph.ancestors(outputs, stop=lambda n: n in entries)
            cached = [n for n in self.prompt if n in entries]
            for node_id in walk & entries.keys():  # hold them now: this run's own puts may evict them
                self.values[node_id] = entries[node_id].outputs
            self.result.cached = cached
            self.emit("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now_ms()})
            for node_id in outputs:  # cached outputs are still visited: their UI is sent again
                if node_id in entries and entries[node_id].ui is not None:
                    self._show(node_id, entries[node_id].ui)

            order = self.graph.run_order({n for n in walk if n not in entries}, outputs)
            for node_id in order:
                current = node_id
                self.token.raise_if_cancelled()
                self._run_node(node_id, keys[node_id])
            current = None
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        except ExecutionInterrupted:
            self.result.status = "interrupted"
            node = self.prompt.get(current or "", {})
            self.emit("execution_interrupted", {"prompt_id": self.prompt_id, "node_id": current,
                                                "node_type": node.get("class_type"),
                                                "executed": list(self.result.executed), "timestamp": _now_ms()})
        except NodeExecutionError as error:
            self.result.status, self.result.error = "error", error
            self.emit("execution_error", {"prompt_id": self.prompt_id, "node_id": error.node_id,
                                          "node_type": error.node_type, "executed": list(self.result.executed),
                                          "exception_message": error.exception_message,
                                          "exception_type": error.exception_type, "traceback": error.traceback,
                                          "current_inputs": error.current_inputs,
                                          "current_outputs": list(self.result.cached), "timestamp": _now_ms(),
                                          **({"input_name": error.input_name} if error.input_name else {})})
        finally:
            self.result.seconds = time.perf_counter() - started
            self.emit("executing", {"node": None, "display_node": None, "prompt_id": self.prompt_id})
        return self.result

    def _show(self, node_id: str, ui: dict[str, Any]) -> None:
        self.result.outputs[node_id] = ui
        self.emit("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id})

    def _run_node(self, node_id: str, key: str) -> None:
        node = self.prompt[node_id]
        definition = self.validated.definitions[node["class_type"]]
        self.emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        specs = definition.specs()
        inputs = self._gather_inputs(node_id, node, definition, specs)
        instance_key = (node_id, definition.name)
        started = time.perf_counter()
        try:
            instance = self.executor._instances.get(instance_key)
            if instance is None:
                instance = self.executor._instances[instance_key] = definition.new_instance()
            context = NodeContext(self.prompt_id, node_id, self.emit, self.token)
            with node_context(context):
                values, ui = _call_over_lists(definition, instance, inputs)
        except ExecutionInterrupted:
            raise
        except Exception as exc:
            raise NodeExecutionError(
                node_id=node_id, node_type=definition.name, exception_type=_qualified_name(type(exc)),
                exception_message=str(exc) or type(exc).__name__, traceback=traceback.format_exception(exc),
                current_inputs={k: [_summarise(v) for v in vs] for k, vs in inputs.items()},
                input_name=getattr(exc, "input_name", None)) from exc
        self.values[node_id] = values
        self.result.executed.append(node_id)
        self.result.node_seconds[node_id] = time.perf_counter() - started
        self.executor.cache.put(key, values, ui)
        if ui is not None:
            self._show(node_id, ui)

    def _gather_inputs(self, node_id: str, node: dict[str, Any], definition: NodeDefinition,
                       specs: NodeSpecs) -> dict[str, list[Any]]:
        inputs: dict[str, list[Any]] = {}
        for spec in specs.declared():
            if spec.name not in node["inputs"]:
                continue
            value = node["inputs"][spec.name]
            inputs[spec.name] = self.values[str(value[0])][int(value[1])] if is_link(value) else [value]
        for spec in specs.hidden:
            inputs[spec.name] = [self._hidden_value(spec.type, node_id)]
        return inputs

    def _hidden_value(self, kind: str, node_id: str) -> Any:
        if kind == "PROMPT":
            return self.prompt
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "AUTH_TOKEN_COMFY_ORG":
            return self.extra_data.get("auth_token_comfy_org")
        if kind == "API_KEY_COMFY_ORG":
            return self.extra_data.get("api_key_comfy_org")
        return None


def _call_over_lists(definition: NodeDefinition, instance: Any,
                     inputs: dict[str, list[Any]]) -> tuple[list[list[Any]], dict[str, Any] | None]:
    """ComfyUI's list semantics: every value is a list; a node is called once per item (shorter
    lists repeat their last item) unless it takes whole lists (INPUT_IS_LIST)."""
    n_out = len(definition.return_types)
    if definition.input_is_list:
        calls = [inputs]
    else:
        length = max((len(v) for v in inputs.values()), default=1)
        if any(len(v) == 0 for v in inputs.values()):
            length = 0
        calls = [{k: v[min(i, len(v) - 1)] for k, v in inputs.items()} for i in range(length)]
    outputs: list[list[Any]] = [[] for _ in range(n_out)]
    ui: dict[str, Any] | None = None
    for kwargs in calls:
        values, call_ui = split_result(definition.call(instance, kwargs), n_out)
        if len(values) != n_out:
            raise TypeError(f"{definition.name} returned {len(values)} outputs but declares {n_out} "
                            f"({', '.join(definition.return_types) or 'none'})")
        for slot, value in enumerate(values):
            if definition.output_is_list[slot] if slot < len(definition.output_is_list) else False:
                outputs[slot].extend(value)
            else:
                outputs[slot].append(value)
        if call_ui:
            ui = ui or {}
            for k, v in call_ui.items():
                ui[k] = ui.get(k, []) + list(v) if isinstance(v, (list, tuple)) else v
    return outputs, ui


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _summarise(value: Any) -> str:
    """A short text for an input value in error reports (tensors by shape, not by contents)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={value.dtype})"
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= 200 else text[:197] + "..."
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_summarise(v)}" for k, v in list(value.items())[:8]) + "}"
    return type(value).__name__
