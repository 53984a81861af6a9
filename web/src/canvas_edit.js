// Editing commands on the library's own machinery: copy / paste through its clipboard (in
// localStorage, so it reaches every workflow tab and browser tab of this editor), paste keeping
// input links (Ctrl+Shift+V), duplicate, rename a node or group, and remove a group keeping its
// nodes. (Align, distribute, colours, collapse and pin are the library's node menu.)

import { compressWidgetSockets } from "./widget_inputs.js";

const CLIPBOARD = "litegrapheditor_clipboard";

/** Copy the selection. Widget sockets we added and left unlinked are left out, as in saved files. */
export function copySelection(editor) {
  const { canvas } = editor;
  if (!canvas.selectedItems.size) return false;
  canvas.copyToClipboard();
  try {
    const data = JSON.parse(localStorage.getItem(CLIPBOARD));
    const graph = editor.current;
    compressWidgetSockets(data, (id) => graph.getNodeById(id));
    localStorage.setItem(CLIPBOARD, JSON.stringify(data));
  } catch {
    // the library's own clipboard content stays as it wrote it
  }
  return true;
}

/** Paste at the mouse; with `keepInputLinks`, inputs fed from outside the copied nodes stay fed. */
export function pasteClipboard(editor, keepInputLinks = false) {
  editor.canvas.pasteFromClipboard({ connectInputs: keepInputLinks });
  editor.setDirty();
}

/** Copies of the selected nodes next to them, the clipboard left as it was. */
export function duplicateSelection(editor) {
  const { canvas } = editor;
  const nodes = editor.selectedNodes();
  if (!nodes.length) return;
  const saved = localStorage.getItem(CLIPBOARD);
  try {
    copySelection(editor);
    const left = Math.min(...nodes.map((n) => n.pos[0]));
    const top = Math.min(...nodes.map((n) => n.pos[1]));
    canvas.pasteFromClipboard({ position: [left + 30, top + 30] });
  } finally {
    if (saved === null) localStorage.removeItem(CLIPBOARD);
    else localStorage.setItem(CLIPBOARD, saved);
  }
}

/** Rename a node in the library's small value prompt (a double-click on its title). */
export function renameNode(editor, node, event) {
  editor.canvas.prompt("Title", node.title, (value) => {
    const title = String(value).trim();
    if (!title || title === node.title) return;
    node.title = title;
    editor.changed();
    editor.setDirty();
  }, event);
}

/** Rename a group (a double-click on its title). */
export function renameGroup(editor, group, event) {
  editor.canvas.prompt("Group title", group.title, (value) => {
    const title = String(value).trim();
    if (!title) return;
    group.title = title;
    editor.changed();
    editor.setDirty();
  }, event);
}

/** Remove a group; the nodes in it stay where they are. */
export function removeGroup(editor, group) {
  const graph = group.graph ?? editor.current;
  graph.beforeChange();
  editor.canvas.deselect(group);
  graph.remove(group);
  graph.afterChange();
  editor.changed();
  editor.setDirty();
}
