"""Cache-aware dispatch: which idle worker runs which pending prompt. Pure Python, no ray.

A prompt's plan is its nodes' cache keys (content hashes of subgraphs, computed by the server as the
executor does). A worker holds the keys its output cache holds, so "this worker has the checkpoint,
the LoRA-patched model, the ControlNet" is a set lookup. What a worker would spend on a prompt is the
estimated time of the nodes it would have to run: the walk from the outputs stops at held nodes.
Estimates come from what workers reported (the seconds each key took; a per-class average otherwise).

Pending prompts are considered in priority order. Each goes to the idle worker that would spend least
on it (ties: the one that has run fewest prompts, i.e. the least loaded). It waits instead only when a
busy worker holds more of it and is expected to finish it sooner (its remaining time plus what it
would still run) than an idle one could; a later prompt may then take the idle worker. A prompt is
overtaken that way at most `max_overtakes` times, so priorities hold up to a bounded reordering.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

DEFAULT_NODE_SECONDS = 0.05  # a node class never seen run
KEY_MEMORY = 200_000  # per-key timings kept (LRU)


@dataclass(frozen=True)
class Plan:
    """What the dispatcher knows of a prompt: node id -> (cache key, class name, producer ids)."""
    nodes: dict[str, tuple[str, str, tuple[str, ...]]]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, validated: Any, keys: dict[str, str]) -> "Plan":
        graph, prompt = validated.graph, validated.prompt
        return cls({n: (k, prompt[n]["class_type"], tuple(graph.sources(n))) for n, k in keys.items()},
                   tuple(validated.outputs))


class CostModel:
    """Seconds a node takes: by its cache key when a worker ran exactly it, else by its class."""

    def __init__(self) -> None:
        self.key_seconds: OrderedDict[str, float] = OrderedDict()
        self.class_seconds: dict[str, float] = {}

    def learn(self, key: str, class_type: str | None, seconds: float) -> None:
        self.key_seconds[key] = seconds
        self.key_seconds.move_to_end(key)
        while len(self.key_seconds) > KEY_MEMORY:
            self.key_seconds.popitem(last=False)
        if class_type is not None:
            old = self.class_seconds.get(class_type)
            self.class_seconds[class_type] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def node(self, key: str, class_type: str) -> float:
        seconds = self.key_seconds.get(key)
        return seconds if seconds is not None else self.class_seconds.get(class_type, DEFAULT_NODE_SECONDS)

    def cost(self, plan: Plan, held: set[str] | frozenset[str]) -> float:
        """Estimated seconds to run `plan` on a worker whose cache holds `held`."""
        total, seen, stack = 0.0, set(), list(plan.outputs)
        while stack:
            node = stack.pop()
            if node in seen or node not in plan.nodes:
                continue
            seen.add(node)
            key, class_type, sources = plan.nodes[node]
            if key in held:
                continue  # served from the cache: its producers need not run either
            total += self.node(key, class_type)
            stack.extend(sources)
        return total


@dataclass(eq=False)
class WorkerView:
    """The dispatcher's picture of one worker."""
    name: str
    held: set[str] = field(default_factory=set)
    completed: int = 0
    running: Plan | None = None
    running_since: float = 0.0  # time.monotonic()
    expected: float = 0.0  # estimated seconds of the running prompt when it started

    def held_after(self) -> set[str]:
        """What it will hold once its running prompt is done."""
        if self.running is None:
            return self.held
        return self.held | {key for key, _, _ in self.running.nodes.values()}

    def remaining(self, now: float) -> float:
        if self.running is None:
            return 0.0
        elapsed = now - self.running_since
        # Past its estimate, the estimate was wrong: expect it to take about as long again.
        return self.expected - elapsed if elapsed < self.expected else elapsed


def assign(candidates: Iterable[tuple[Any, Plan]], idle: list[WorkerView], busy: list[WorkerView],
           model: CostModel, *, max_overtakes: int = 8, now: float | None = None) -> list[tuple[Any, WorkerView]]:
    """Pairs (item, idle worker) to start now. `candidates` are pending items with their plans, in
    priority order; items with an `overtaken` counter get it raised when a later item starts first."""
    now = time.monotonic() if now is None else now
    idle, busy = list(idle), list(busy)
    chosen: list[tuple[Any, WorkerView]] = []
    waiting: list[Any] = []
    for item, plan in candidates:
        if not idle:
            break
        costs = {worker: model.cost(plan, worker.held) for worker in idle}
        best = min(idle, key=lambda w: (costs[w], w.completed, w.name))
        later = min((w.remaining(now) + model.cost(plan, w.held_after()) for w in busy), default=None)
        if later is not None and later < costs[best] and getattr(item, "overtaken", 0) < max_overtakes:
            waiting.append(item)  # its warm worker will be free sooner than this one could build it
            continue
        for earlier in waiting:
            earlier.overtaken = getattr(earlier, "overtaken", 0) + 1
        chosen.append((item, best))
        idle.remove(best)
        busy.append(WorkerView(best.name, best.held, best.completed, plan, now, costs[best]))
    return chosen
