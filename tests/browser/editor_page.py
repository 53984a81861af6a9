"""What a test does with the editor, in a person's terms: click, drag and type at positions
read from the page (`window.nodegraph`), so the input really goes through the canvas."""
from __future__ import annotations

import json
import time
from typing import Any


class EditorPage:
    def __init__(self, page, server):
        self.page = page
        self.server = server
        self.console_errors: list[str] = []
        self.allowed_errors: list[str] = []  # substrings of console errors a test expects
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))

    def allow_console_error(self, substring: str) -> None:
        self.allowed_errors.append(substring)

    # -- page ------------------------------------------------------------------------------------

    def open(self) -> None:
        self.page.goto(self.server.url + "/")
        self.page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
        self.page.wait_for_function("nodegraph.socket.connected", timeout=10_000)

    def reload(self) -> None:
        self.page.reload()
        self.page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    # -- the graph -------------------------------------------------------------------------------

    def nodes(self) -> list[dict]:
        return self.js("""nodegraph.editor.nodes.map(n => ({id: n.id, type: n.type, title: n.title,
            pos: [...n.pos], size: [...n.size], mode: n.mode,
            widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value]))}))""")

    def node(self, node_id) -> dict:
        return next(n for n in self.nodes() if n["id"] == node_id)

    def node_ids_of(self, type_: str) -> list[int]:
        return [n["id"] for n in self.nodes() if n["type"] == type_]

    def workflow(self) -> dict:
        return self.js("nodegraph.editor.serialize()")

    def links(self) -> list[list]:
        return self.js("nodegraph.editor.links()")

    def state(self, node_id) -> dict:
        return self.js("id => nodegraph.editor.stateOf(id)", str(node_id))

    def load(self, workflow: dict) -> None:
        self.js("w => nodegraph.loadWorkflow(w)", workflow)

    def fit(self) -> None:
        self.js("nodegraph.editor.fitView()")

    # -- positions (client pixels) -----------------------------------------------------------------

    def to_client(self, graph_pos) -> tuple[float, float]:
        x, y = self.js("p => nodegraph.editor.toClient(p)", list(graph_pos))
        return x, y

    def title_pos(self, node_id) -> tuple[float, float]:
        n = self.node(node_id)
        return self.to_client([n["pos"][0] + 60, n["pos"][1] - 15])

    def body_pos(self, node_id) -> tuple[float, float]:
        """A point inside a node that is neither a slot nor a widget (a double-click there opens a
        subgraph, a drag there moves the node)."""
        x, y = self.js("""id => {
            const e = nodegraph.editor, n = e.nodeById(id);
            const slots = [...n.inputs.map((_, i) => n.getInputPos(i)), ...n.outputs.map((_, i) => n.getOutputPos(i))];
            const clear = (x, y) => !n.getSlotOnPos([x, y]) && !n.getWidgetOnPos(x, y, true) && !n.findResizeDirection?.(x, y)
              && slots.every(([sx, sy]) => Math.abs(x - sx) > 22 || Math.abs(y - sy) > 14);
            for (let y = n.pos[1] + n.size[1] - 8; y > n.pos[1] + 4; y -= 4)
              for (let x = n.pos[0] + n.size[0] - 12; x > n.pos[0] + 12; x -= 6)
                if (clear(x, y)) return [x, y];
            return [n.pos[0] + n.size[0] / 2, n.pos[1] + n.size[1] / 2]; }""", node_id)
        return self.to_client([x, y])

    def slot_pos(self, node_id, kind: str, index: int) -> tuple[float, float]:
        x, y = self.js("([id, kind, i]) => nodegraph.editor.slotClient(nodegraph.editor.nodeById(id), kind, i)",
                       [node_id, kind, index])
        return x, y

    def slot_index(self, node_id, kind: str, name: str) -> int:
        return self.js("""([id, kind, name]) => {
            const n = nodegraph.editor.nodeById(id);
            return (kind === 'input' ? n.inputs : n.outputs).findIndex(s => s.name === name); }""",
                       [node_id, kind, name])

    def widget_pos(self, node_id, name: str, where: str = "centre") -> tuple[float, float]:
        # Drawn first: a widget's place is known once a frame has laid it out (litegraph's last_y), and a
        # test can act sooner after an undo or a load than a person can.
        x, y, w, h = self.js("""([id, name]) => {
            const e = nodegraph.editor, n = e.nodeById(id);
            e.drawNow();
            return e.widgetRect(n, n.widgets.find(w => w.name === name)); }""", [node_id, name])
        fx = {"centre": 0.5, "left-arrow": 0.0, "right-arrow": 1.0}[where]
        gx = x + 8 if fx == 0 else x + w - 8 if fx == 1 else x + w * fx
        return self.to_client([gx, y + h / 2])

    def empty_spot(self, width: float = 0, height: float = 0) -> tuple[float, float]:
        """A point of the canvas with no node, in client pixels; with a size (graph units), the
        top-left corner of a free area that big, fully on screen (where a new node can go)."""
        return self.js("""([w, h]) => {
            const e = nodegraph.editor, c = document.querySelector('#graph').getBoundingClientRect();
            for (let y = c.top + 30; y < c.bottom - 30; y += 40)
              for (let x = c.left + 30; x < c.right - 30; x += 40) {
                if (e.nodeAt(x, y) || document.elementFromPoint(x, y)?.id !== 'graph') continue;
                const [gx, gy] = e.toGraph([x, y]);
                const [rx, ry] = e.toClient([gx + w, gy + h]);
                if (rx > c.right - 10 || ry > c.bottom - 10 || document.elementFromPoint(rx, ry)?.id !== 'graph') continue;
                if (!e.nodes.some(n => gx + w > n.pos[0] - 40 && gx < n.pos[0] + n.size[0] + 40 &&
                    gy + h > n.pos[1] - 70 && gy < n.pos[1] + n.size[1] + 40)) return [x, y];
              }
            return [c.left + 20, c.bottom - 20]; }""", [width, height])

    # -- input -----------------------------------------------------------------------------------

    def drag(self, start, end, steps: int = 8) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move(*end, steps=steps)
        mouse.up()

    def connect(self, from_id, output: str, to_id, input_: str) -> None:
        self.drag(self.slot_pos(from_id, "output", self.slot_index(from_id, "output", output)),
                  self.slot_pos(to_id, "input", self.slot_index(to_id, "input", input_)))

    def connect_to_widget(self, from_id, output: str, to_id, widget: str) -> None:
        """Drag from an output and drop the link on a widget (ComfyUI's widget-to-input)."""
        self.drag(self.slot_pos(from_id, "output", self.slot_index(from_id, "output", output)),
                  self.widget_pos(to_id, widget))

    def detach_input(self, node_id, name: str) -> None:
        """Drag a link off an input and drop it on empty canvas (it is removed), then close the
        connection menu the drop opens."""
        self.drag(self.slot_pos(node_id, "input", self.slot_index(node_id, "input", name)), self.empty_spot())
        self.page.keyboard.press("Escape")
        self.page.mouse.click(*self.empty_spot())

    def widget_value(self, node_id, name: str):
        return self.js("([id, n]) => nodegraph.editor.nodeById(id).widgets.find(w => w.name === n)?.value", [node_id, name])

    def sent_prompt(self, action) -> dict:
        """Do `action` (which queues) and return the body POSTed to /prompt."""
        with self.page.expect_request(lambda r: r.url.endswith("/prompt") and r.method == "POST") as request:
            action()
        return request.value.post_data_json

    def double_click_for(self, at, selector: str):
        """Double-click at `at` until `selector` appears; returns its element. litegraph tells a double
        click by the time between its two clicks, which a busy machine can stretch past its limit."""
        for attempt in range(3):
            self.page.mouse.dblclick(*at)
            try:
                return self.page.wait_for_selector(selector, timeout=4000)
            except Exception:
                if attempt == 2:
                    raise

    def add_node_by_search(self, query: str, at) -> int:
        """Double-click the canvas at `at`, type `query`, press Enter; returns the new node's id."""
        before = {n["id"] for n in self.nodes()}
        self.double_click_for(at, ".ng-search input")
        self.page.keyboard.type(query)
        self.page.keyboard.press("Enter")
        self.page.wait_for_function("n => nodegraph.editor.nodes.length > n", arg=len(before))
        (new,) = {n["id"] for n in self.nodes()} - before
        return new

    def set_number(self, node_id, name: str, value) -> None:
        """Click the middle of a number widget, type the value into the prompt, press Enter."""
        self.page.mouse.click(*self.widget_pos(node_id, name))
        box = self.page.wait_for_selector(".graphdialog input")
        box.fill(str(value))
        self.page.keyboard.press("Enter")
        self.page.wait_for_function("([id, n, v]) => nodegraph.editor.nodeById(id).widgets.find(w => w.name === n).value == v",
                                    arg=[node_id, name, value])

    def set_text(self, node_id, name: str, text: str) -> None:
        """Click a multi-line text widget, select all, type, leave with Escape."""
        self.page.mouse.click(*self.widget_pos(node_id, name))
        self.page.wait_for_selector("textarea.ng-textarea")
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Escape")

    def pixel(self, at) -> list[int]:
        """The RGB of the canvas at a client position (after drawing a frame)."""
        return self.js("""([x, y]) => {
            nodegraph.editor.drawNow();
            const c = document.querySelector('#graph'), r = c.getBoundingClientRect(), k = c.width / r.width;
            return [...c.getContext('2d').getImageData((x - r.left) * k, (y - r.top) * k, 1, 1).data].slice(0, 3); }""", list(at))

    def undo_depth(self) -> int:
        return self.js("nodegraph.undo.undoStack.length")

    def wait_checkpoint(self, depth: int) -> None:
        """Wait until the edit just made is recorded for undo (edits are recorded after 150 ms)."""
        self.page.wait_for_function("n => nodegraph.undo.undoStack.length >= n", arg=depth)

    def wait_event(self, type_: str, since: int = 0, timeout: float = 60) -> dict:
        """Wait for a websocket message of this page (index >= since)."""
        handle = self.page.wait_for_function(
            "([t, s]) => nodegraph.events.slice(s).find(e => e.type === t) ?? null", arg=[type_, since],
            timeout=timeout * 1000, polling=100)
        return handle.json_value()

    def event_count(self) -> int:
        return self.js("nodegraph.events.length")

    def events_of(self, type_: str, since: int = 0) -> list[dict]:
        return self.js("([t, s]) => nodegraph.events.slice(s).filter(e => e.type === t)", [type_, since])

    def wait_idle(self, timeout: float = 60) -> None:
        self.server.wait_idle(timeout)

    def wait_images(self, node_id, timeout: float = 60) -> None:
        self.page.wait_for_function(
            "id => (nodegraph.editor.images.get(String(id)) ?? []).some(i => i.complete && i.naturalWidth > 0 && !i.src.startsWith('blob:'))",
            arg=node_id, timeout=timeout * 1000, polling=200)

    def canvas_pixels_in_node_images(self, node_id) -> dict:
        """Colour statistics of the canvas where a node draws its images (to see an image is there)."""
        return self.js("""id => {
            const e = nodegraph.editor, n = e.nodeById(id);
            e.drawNow();
            const top = e.imageTop(n) + 10;
            const [x0, y0] = e.toClient([n.pos[0] + 10, n.pos[1] + top]);
            const [x1, y1] = e.toClient([n.pos[0] + n.size[0] - 10, n.pos[1] + n.size[1] - 10]);
            const c = document.querySelector('#graph'), r = c.getBoundingClientRect(), k = c.width / r.width;
            const data = c.getContext('2d').getImageData((x0 - r.left) * k, (y0 - r.top) * k, (x1 - x0) * k, (y1 - y0) * k).data;
            const colours = new Set();
            for (let i = 0; i < data.length; i += 4 * 7) colours.add((data[i] >> 4) << 8 | (data[i+1] >> 4) << 4 | data[i+2] >> 4);
            return {distinct: colours.size}; }""", node_id)


def wait_until(predicate, timeout: float = 10, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
