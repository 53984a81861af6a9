"""Shared by the loader-family tests: run one node through the executor, and check that its error
blames the node, the input and says what it should."""
from nodegraph import Executor, OutputCache, validate_prompt


def run_one(library, class_type, executor=None, **inputs):
    prompt = {"1": {"class_type": class_type, "inputs": inputs}}
    return (executor or Executor(OutputCache(0))).execute(validate_prompt(prompt, library, targets=["1"]))


def assert_blames(result, node_type, input_name, *fragments):
    assert result.status == "error", result.status
    error = result.error
    assert (error.node_id, error.node_type, error.input_name) == ("1", node_type, input_name)
    for fragment in fragments:
        assert fragment in error.exception_message, error.exception_message
