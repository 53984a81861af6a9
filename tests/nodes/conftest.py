import pytest

from nodegraph import NodeRegistry, folders


@pytest.fixture
def layout(tmp_path):
    """A fresh models/input/output/temp layout for each test, made the active one."""
    previous = folders._current
    active = folders.use(folders.Folders(tmp_path))
    active.ensure()
    yield active
    folders._current = previous


@pytest.fixture(scope="session")
def library():
    """The full node library."""
    import nodes
    registry = NodeRegistry()
    nodes.register_nodes(registry)
    return registry
