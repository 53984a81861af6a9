"""The dependency graph of a prompt: links, ancestors, cycles and the run order.

Everything is iterative (no recursion), so a 10,000-node chain is as safe as a 10-node one, and
costs O(n log n) at most (the heap of the scheduler).
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from .workflow.api_format import Prompt, is_link


@dataclass(frozen=True)
class Edge:
    input_name: str
    source: str
    slot: int


class DependencyGraph:
    """Producer/consumer edges of a prompt. Links to missing nodes are kept in `upstream` (the
    validator reports them) but not in `downstream`."""

    def __init__(self, prompt: Prompt):
        self.prompt = prompt
        self.upstream: dict[str, list[Edge]] = {}
        self.downstream: dict[str, set[str]] = {node_id: set() for node_id in prompt}
        self._producers: dict[str, list[str]] = {}  # distinct existing producers, computed once
        for node_id, node in prompt.items():
            edges = [Edge(name, str(value[0]), int(value[1]))
                     for name, value in node.get("inputs", {}).items() if is_link(value)]
            self.upstream[node_id] = edges
            producers = self._producers[node_id] = []
            for edge in edges:
                consumers = self.downstream.get(edge.source)
                if consumers is not None:
                    if node_id not in consumers:
                        producers.append(edge.source)
                    consumers.add(node_id)

    def sources(self, node_id: str) -> list[str]:
        """Distinct producers of a node that exist in the prompt."""
        return self._producers.get(node_id, [])

    def ancestors(self, roots: Iterable[str], *, stop: Callable[[str], bool] = lambda n: False) -> set[str]:
        """The roots and every node they depend on; the walk does not go past nodes where
        `stop(node)` is true (e.g. cached ones), though those nodes are included."""
        seen: set[str] = set()
        stack = [r for r in roots if r in self.prompt]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if not stop(node_id):
                stack.extend(s for s in self.sources(node_id) if s not in seen)
        return seen

    def descendants(self, roots: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            stack.extend(self.downstream.get(node_id, ()))
        return seen

    def cycle_nodes(self, nodes: set[str]) -> set[str]:
        """Nodes of `nodes` that lie on (or between) dependency cycles: what remains after peeling
        nodes without producers from the front and nodes without consumers from the back."""
        remaining = set(nodes)
        for direction in ("forward", "backward"):
            if not remaining:
                break  # the usual case: the forward peel already emptied an acyclic graph
            degree = {n: 0 for n in remaining}
            for n in remaining:
                neighbours = self.sources(n) if direction == "forward" else self.downstream.get(n, ())
                degree[n] = sum(1 for s in neighbours if s in remaining)
            queue = deque(n for n, d in degree.items() if d == 0)
            while queue:
                n = queue.popleft()
                remaining.discard(n)
                onward = self.downstream.get(n, ()) if direction == "forward" else self.sources(n)
                for m in onward:
                    if m in remaining:
                        degree[m] -= 1
                        if degree[m] == 0:
                            queue.append(m)
        return remaining

    def run_order(self, nodes: set[str], outputs: Iterable[str]) -> list[str]:
        """A topological order of `nodes` (all their producers inside `nodes` come first).

        Among ready nodes, those closest to an output go first, so results appear early; then
        the order of the prompt. Raises ValueError on a cycle.
        """
        distance = self._distance_to_outputs(nodes, outputs)
        rank = {n: i for i, n in enumerate(self.prompt)}
        blocked = {n: sum(1 for s in self.sources(n) if s in nodes) for n in nodes}
        ready = [(distance.get(n, len(nodes)), rank[n], n) for n, count in blocked.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, _, node_id = heapq.heappop(ready)
            order.append(node_id)
            for consumer in self.downstream.get(node_id, ()):
                if consumer in blocked:
                    blocked[consumer] -= 1
                    if blocked[consumer] == 0:
                        heapq.heappush(ready, (distance.get(consumer, len(nodes)), rank[consumer], consumer))
        if len(order) != len(nodes):
            raise ValueError(f"dependency cycle among nodes {sorted(self.cycle_nodes(nodes))}")
        return order

    def _distance_to_outputs(self, nodes: set[str], outputs: Iterable[str]) -> dict[str, int]:
        distance: dict[str, int] = {}
        queue = deque()
        for out in outputs:
            if out in nodes and out not in distance:
                distance[out] = 0
                queue.append(out)
        while queue:
            n = queue.popleft()
            for s in self.sources(n):
                if s in nodes and s not in distance:
                    distance[s] = distance[n] + 1
                    queue.append(s)
        return distance
