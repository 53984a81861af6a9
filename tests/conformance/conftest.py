import pytest

from nodegraph import NodeRegistry


@pytest.fixture(scope="session")
def library():
    """The full node library."""
    import nodes
    registry = NodeRegistry()
    nodes.register_nodes(registry)
    return registry
