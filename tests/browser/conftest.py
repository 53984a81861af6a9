"""Browser tests: the real server (tests/server/live.py) with the real node library and the tiny
default model, driven through Debian's Chromium by Playwright. Skipped, with the reason, when
Chromium, Playwright or the editor's npm packages are missing."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("NODEGRAPH_CHROMIUM", "/usr/bin/chromium")
WEB = Path(__file__).resolve().parents[2] / "web"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "editor"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[test])"
    if not (WEB / "node_modules" / "@comfyorg" / "litegraph").is_dir():
        return "the editor's packages are missing (npm ci --prefix web)"
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed: the node library cannot run"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def sd_server(tmp_path_factory):
    import nodes
    from nodegraph import NodeRegistry
    from nodes.default_model import ensure_default_checkpoint
    from tests.server.live import LiveServer

    registry = NodeRegistry()
    nodes.register_nodes(registry)
    live = LiveServer(tmp_path_factory.mktemp("browser") / "home", registry, web_root=WEB)
    ensure_default_checkpoint(live.layout)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: Playwright's sync API keeps an event loop running in this thread
    # while it is open, which would break later tests that call asyncio.run().
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def editor(browser, sd_server, request):
    """A fresh page on the editor (its own storage), failing the test on any console error."""
    from .editor_page import EditorPage

    context = browser.new_context(viewport={"width": 1400, "height": 850}, accept_downloads=True)
    page = context.new_page()
    ed = EditorPage(page, sd_server)
    ed.open()
    yield ed
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        out = Path(os.environ.get("NODEGRAPH_TEST_ARTIFACTS", "/tmp/nodegraph-browser-failures"))
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"{request.node.name}.png"))
    errors = [e for e in ed.console_errors if not any(a in e for a in ed.allowed_errors)]
    context.close()
    if not failed:
        assert not errors, f"console errors: {errors}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def save_doc_screenshot(page, name: str) -> None:
    """A screenshot of a main state for docs/editor/ (PNG of the viewport). Only when asked for with
    NODEGRAPH_DOC_SCREENSHOTS=1, so that running the tests never changes tracked files."""
    if os.environ.get("NODEGRAPH_DOC_SCREENSHOTS") != "1":
        return
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"))


@pytest.fixture
def clean_models(sd_server):
    """Remove model files a test added."""
    added: list[Path] = []
    yield added
    for path in added:
        if path.exists():
            shutil.os.remove(path)
