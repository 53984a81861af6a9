"""The `server` fixture runs each test against both backends: the embedded worker thread, and a
Ray worker actor (one: these tests pin down what is pending while one prompt runs). Tests of
several Ray workers are in tests/scale."""
import pytest

from . import server_nodes
from .live import LiveServer
from .ray_support import RemoteCalls, kill_workers, ray_options, wait_workers_ready


@pytest.fixture(scope="module")
def ray_namespace(ray_runtime):
    """The module's servers hand their worker on to the next one (a restarted server adopts and
    re-configures its workers): one actor start per module instead of one per test."""
    import uuid
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    yield namespace
    kill_workers(namespace)


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def server(request, tmp_path):
    options = {}
    if request.param == "ray":
        options["backend"] = ray_options(workers=1, namespace=request.getfixturevalue("ray_namespace"),
                                         keep_workers=True)
    live = LiveServer(tmp_path / "home", server_nodes.make_registry(), preview_method="latent2rgb", **options)
    if request.param == "ray":
        wait_workers_ready(live, 1)
    yield live
    live.stop()


@pytest.fixture
def calls(request):
    """Node calls counted where the nodes run: here, or in the Ray workers."""
    from tests.engine import toy_nodes
    if "server" in request.fixturenames and request.node.callspec.params.get("server") == "ray":
        counter = RemoteCalls(request.getfixturevalue("server"))
    else:
        counter = toy_nodes.CALLS
    counter.clear()
    return counter


@pytest.fixture(scope="module")
def sd_library():
    """The real node library (torch and the SD nodes), for the end-to-end tests."""
    pytest.importorskip("torch")
    import nodes
    from nodegraph import NodeRegistry
    registry = NodeRegistry()
    nodes.register_nodes(registry)
    return registry
