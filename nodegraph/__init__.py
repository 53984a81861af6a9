"""nodegraph: a node-graph workflow engine, ComfyUI-compatible, that never imports torch.

The pieces, in the order a prompt meets them: workflow (formats) -> validation -> graph ->
cache_keys/cache -> executor, with contract/registry describing the nodes.
"""
from .cache import OutputCache
from .contract import (Boolean, Combo, Float, Hidden, Input, InputSpec, Int, Node, NodeDefinition, NodeOutput,
                       Output, String)
from .errors import (ExecutionInterrupted, NodeExecutionError, NodegraphError, NodeInputError, ValidationError,
                     WorkflowError)
from .executor import Executor, RunResult
from .progress import CancellationToken, ProgressBar, check_cancelled
from .registry import NodeRegistry, default_registry
from .validation import ValidatedPrompt, validate_prompt
from .workflow import WorkflowDocument, load_document, load_prompt

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it; CHANGELOG.md)

__all__ = [
    "Boolean", "CancellationToken", "Combo", "ExecutionInterrupted", "Executor", "Float", "Hidden", "Input",
    "InputSpec", "Int", "Node", "NodeDefinition", "NodeExecutionError", "NodeInputError", "NodeOutput", "NodeRegistry",
    "NodegraphError", "Output", "OutputCache", "ProgressBar", "RunResult", "String", "ValidatedPrompt",
    "ValidationError", "WorkflowDocument", "WorkflowError", "check_cancelled", "default_registry",
    "load_document", "load_prompt", "validate_prompt",
]
