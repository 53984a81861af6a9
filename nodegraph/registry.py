"""The node registry: class name -> NodeDefinition, plus loading of node packs.

A registry is a plain object (not a global), so tests build small ones and the server and CLI
build the full library with `default_registry()`.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from .contract import NodeDefinition, define
from .errors import RegistrationError

log = logging.getLogger(__name__)


@dataclass
class PackReport:
    """What loading a folder of custom node packs did, for logs and `/system_stats`."""

    loaded: dict[str, list[str]] = field(default_factory=dict)  # pack -> node names
    failed: dict[str, str] = field(default_factory=dict)  # pack -> error message


class NodeRegistry:
    def __init__(self) -> None:
        self._definitions: dict[str, NodeDefinition] = {}

    def register(self, cls: type, name: str | None = None, *, display_name: str | None = None,
                 python_module: str | None = None) -> NodeDefinition:
        definition = define(cls, name, display_name=display_name, python_module=python_module)
        if definition.name in self._definitions and self._definitions[definition.name].cls is not cls:
            log.warning("node %s is registered again by %s; the later one wins",
                        definition.name, definition.python_module)
        self._definitions[definition.name] = definition
        return definition

    def register_all(self, classes: Any, display_names: Mapping[str, str] | None = None,
                     python_module: str | None = None) -> list[str]:
        """Register a ComfyUI-style NODE_CLASS_MAPPINGS dict, or an iterable of classes."""
        display_names = display_names or {}
        items = classes.items() if isinstance(classes, Mapping) else ((c.__name__, c) for c in classes)
        names = []
        for name, cls in items:
            self.register(cls, name, display_name=display_names.get(name), python_module=python_module)
            names.append(name)
        return names

    def get(self, name: str) -> NodeDefinition | None:
        return self._definitions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self) -> Iterator[NodeDefinition]:
        return iter(self._definitions.values())

    def __len__(self) -> int:
        return len(self._definitions)

    def names(self) -> list[str]:
        return sorted(self._definitions)

    def object_info(self) -> dict[str, Any]:
        """Every node's NodeInfo; a node whose INPUT_TYPES raises is logged and left out."""
        info = {}
        for name, definition in self._definitions.items():
            try:
                info[name] = definition.info()
            except Exception as exc:  # a broken custom node must not hide the others
                log.error("node %s: cannot describe its inputs: %s", name, exc)
        return info

    def load_custom_nodes(self, folder: Path) -> PackReport:
        """Import every pack in `folder` (a module file or a package; `*.disabled` skipped) and
        register its NODE_CLASS_MAPPINGS. A failing pack is reported, never fatal."""
        report = PackReport()
        folder = Path(folder)
        if not folder.is_dir():
            return report
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "_")) or entry.name.endswith(".disabled"):
                continue
            if entry.is_file() and entry.suffix != ".py":
                continue
            if entry.is_dir() and not (entry / "__init__.py").exists():
                continue
            pack = entry.stem if entry.is_file() else entry.name
            try:
                module = _import_pack(entry, pack)
                mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
                if not isinstance(mappings, Mapping):
                    raise RegistrationError("it exports no NODE_CLASS_MAPPINGS dict")
                names = self.register_all(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
                                          python_module=f"custom_nodes.{pack}")
                report.loaded[pack] = names
                log.info("custom nodes: loaded %s (%d nodes)", pack, len(names))
            except Exception as exc:
                report.failed[pack] = f"{type(exc).__name__}: {exc}"
                log.error("custom nodes: cannot load %s: %s: %s", entry, type(exc).__name__, exc)
        return report


def _import_pack(path: Path, pack: str) -> Any:
    module_name = f"custom_nodes.{pack}"
    location = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        module_name, location, submodule_search_locations=[str(path)] if path.is_dir() else None)
    if spec is None or spec.loader is None:
        raise RegistrationError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def default_registry(*, custom_nodes: Path | None = None) -> NodeRegistry:
    """The full node library (`nodes`, which needs torch) plus optional custom node packs."""
    registry = NodeRegistry()
    library = importlib.import_module("nodes")
    library.register_nodes(registry)
    if custom_nodes is not None:
        registry.load_custom_nodes(custom_nodes)
    return registry
