"""Settings: light theme, link style, snap to grid, and the list of keyboard shortcuts; kept on the
server through /settings, so they come back after a reload."""
from __future__ import annotations

DEFAULTS = {"Comfy.ColorPalette": "dark", "Comfy.LinkRenderMode": 2, "pysssss.SnapToGrid": False, "Comfy.SnapToGrid.GridSize": 10}


def test_theme_links_snap_and_shortcuts_are_kept_on_the_server(editor):
    from .conftest import save_doc_screenshot

    page = editor.page
    try:
        page.click("#btn-settings")
        page.select_option("#settings-dialog select[name='Comfy.ColorPalette']", "light")
        page.wait_for_selector("body[data-theme='light']")
        page.select_option("#settings-dialog select[name='Comfy.LinkRenderMode']", "0")
        page.check("#settings-dialog input[name='pysssss.SnapToGrid']")
        page.fill("#settings-dialog input[name='Comfy.SnapToGrid.GridSize']", "50")
        page.press("#settings-dialog input[name='Comfy.SnapToGrid.GridSize']", "Tab")
        table = page.inner_text("#settings-dialog table.shortcuts")
        for keys, what in [("Ctrl+Z", "Undo"), ("Ctrl+Shift+E", "subgraph"), ("Ctrl+B", "Bypass"), ("Ctrl+Shift+V", "keeping the links")]:
            assert keys in table and what in table
        save_doc_screenshot(page, "settings")
        page.click("#settings-dialog .close")

        assert min(editor.pixel(editor.empty_spot())) > 200  # a light canvas
        assert editor.js("nodegraph.editor.canvas.links_render_mode") == 0
        start = editor.title_pos(4)
        editor.drag(start, (start[0] + 37, start[1] + 23))
        x, y = editor.node(4)["pos"]
        assert x % 50 == 0 and y % 50 == 0 and (x, y) != (400, 600)

        page.wait_for_function("fetch('/api/settings').then(r => r.json()).then(s => s['Comfy.SnapToGrid.GridSize'] === 50)")
        stored = editor.server.get("/settings").json()
        assert {k: stored[k] for k in DEFAULTS} == {"Comfy.ColorPalette": "light", "Comfy.LinkRenderMode": 0,
                                                    "pysssss.SnapToGrid": True, "Comfy.SnapToGrid.GridSize": 50}
        editor.reload()
        assert editor.js("document.body.dataset.theme") == "light"
        assert editor.js("nodegraph.editor.canvas.links_render_mode") == 0
    finally:  # the server is shared by the other tests
        editor.server.post("/settings", DEFAULTS)
