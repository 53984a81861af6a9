"""Servers on the Ray backend with two worker actors (tests/server runs the common API tests on one)."""
import uuid

import pytest

from tests.server.live import LiveServer
from tests.server.ray_support import kill_workers, ray_options, wait_workers_ready

from . import scale_nodes

REGISTRY = "tests.scale.scale_nodes:make_registry"


@pytest.fixture(scope="module")
def shared_namespace(ray_runtime):
    """A module's servers adopt the previous server's workers (re-configured for the new folders)."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    yield namespace
    kill_workers(namespace)


@pytest.fixture
def two_workers(shared_namespace, tmp_path):
    live = start_server(tmp_path, namespace=shared_namespace, keep_workers=True)
    yield live
    live.stop()


def start_server(tmp_path, workers: int = 2, **options) -> LiveServer:
    backend = ray_options(workers=workers, registry_factory=REGISTRY, **options)
    live = LiveServer(tmp_path / "home", scale_nodes.make_registry(), preview_method="latent2rgb", backend=backend)
    wait_workers_ready(live, workers)
    return live
