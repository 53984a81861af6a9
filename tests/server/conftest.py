import pytest

from . import server_nodes
from .live import LiveServer


@pytest.fixture
def server(tmp_path):
    live = LiveServer(tmp_path / "home", server_nodes.make_registry(), preview_method="latent2rgb")
    yield live
    live.stop()
