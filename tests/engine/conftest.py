import pytest

from . import toy_nodes


@pytest.fixture
def registry():
    return toy_nodes.make_registry()


@pytest.fixture
def calls():
    toy_nodes.CALLS.clear()
    return toy_nodes.CALLS
