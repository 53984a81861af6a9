// Widget inputs: every widget has an input socket (`inputs[i].widget = {name}`), as in ComfyUI's
// frontend, drawn on the widget's row. A link dropped on a widget connects to its socket; while
// linked the widget is greyed and its value ignored, and when the link goes the widget is back with
// its value. Saved files keep only the sockets that are linked or came from the file (ComfyUI's
// "compressed" widget inputs), with the links renumbered to match.

/** The socket type of a widget: its input's type in the node definition (COMBO for lists). */
export function socketType(widget) {
  return widget.inputType ?? null;
}

/** Add a socket for every convertible widget that has none. Sockets we add are marked `auto`. */
export function addWidgetSockets(node) {
  for (const widget of node.widgets ?? []) {
    const type = socketType(widget);
    if (!type || node.inputs?.some((i) => i.widget?.name === widget.name)) continue;
    const slot = node.addInput(widget.name, type, { widget: { name: widget.name } });
    slot.auto = true;
  }
}

/** After `configure(info)`: the file's inputs, in the file's order (links point at their indices),
 * then the sockets of the widgets the file did not list. */
export function restoreWidgetSockets(node, info) {
  if (Array.isArray(info?.inputs)) node.inputs.length = info.inputs.length;
  // A linked socket from the file is dropped again once unlinked; an unlinked one stays as saved.
  for (const slot of node.inputs ?? []) if (slot.widget && slot.link != null) slot.auto = true;
  addWidgetSockets(node);
}

/** Is this (live) input a widget socket we added that carries no link? */
function droppable(slot) {
  return slot?.widget && slot.auto && (slot.link === null || slot.link === undefined);
}

/**
 * Remove unlinked added sockets from a serialized graph (root or subgraph definition), renumbering
 * link target slots. `liveNode(id)` returns the live node of a serialized one.
 */
export function compressWidgetSockets(data, liveNode) {
  const remap = new Map(); // node id -> old index -> new index
  for (const node of data.nodes ?? []) {
    const live = liveNode(node.id);
    if (!live?.inputs || !Array.isArray(node.inputs)) continue;
    const kept = [];
    const indices = new Map();
    node.inputs.forEach((slot, i) => {
      if (droppable(live.inputs[i])) return;
      indices.set(i, kept.length);
      kept.push(slot);
    });
    if (kept.length === node.inputs.length) continue;
    node.inputs = kept;
    remap.set(String(node.id), indices);
  }
  if (!remap.size) return data;
  for (const link of data.links ?? []) {
    if (Array.isArray(link)) {
      const moved = remap.get(String(link[3]))?.get(link[4]);
      if (moved !== undefined) link[4] = moved;
    } else if (link && typeof link === "object") {
      const moved = remap.get(String(link.target_id))?.get(link.target_slot);
      if (moved !== undefined) link.target_slot = moved;
    }
  }
  return data;
}

/** The widget a link feeds, if its target input is a widget socket. */
export function targetWidget(node, slotIndex) {
  const slot = node.inputs?.[slotIndex];
  if (!slot?.widget) return null;
  return node.widgets?.find((w) => w.name === slot.widget.name) ?? null;
}

/** Is the widget's value replaced by a link? */
export function isLinked(node, widget) {
  const slot = node.inputs?.find((i) => i.widget?.name === widget.name);
  return slot?.link !== null && slot?.link !== undefined;
}
