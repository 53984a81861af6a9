import pytest

from . import server_nodes
from .live import LiveServer


@pytest.fixture
def server(tmp_path):
    live = LiveServer(tmp_path / "home", server_nodes.make_registry(), preview_method="latent2rgb")
    yield live
    live.stop()


@pytest.fixture
def calls():
    from tests.engine import toy_nodes
    toy_nodes.CALLS.clear()
    return toy_nodes.CALLS
