// Keyboard shortcuts: one table, used by the key handler and shown in Settings → Shortcuts.
// Keys are matched case-insensitively; "Mod" is Ctrl (Cmd on a Mac). The handler listens in the
// capture phase so that shortcuts work wherever the focus is (except while typing in a field), and
// the canvas library does not also act on keys handled here.

export const SHORTCUTS = [
  { keys: "Mod+Enter", label: "Queue the workflow", run: (app) => app.queue(), typing: true },
  { keys: "Mod+Shift+Enter", label: "Queue at the front", run: (app) => app.queue({ front: true }), typing: true },
  { keys: "Mod+Z", label: "Undo", run: (app) => app.undo.undo(), history: true },
  { keys: "Mod+Y", label: "Redo", run: (app) => app.undo.redo(), history: true },
  { keys: "Mod+Shift+Z", label: "Redo", run: (app) => app.undo.redo(), history: true },
  { keys: "Mod+C", label: "Copy the selected nodes", run: (app) => app.editor.copy() },
  // Pasting happens on the browser's paste event (files.js): it may bring a file or a workflow text.
  { keys: "Mod+V", label: "Paste nodes at the mouse (or a workflow, an image for the selected Load Image)", native: true },
  { keys: "Mod+Shift+V", label: "Paste nodes, keeping the links into them", native: true },
  { keys: "Mod+D", label: "Duplicate the selected nodes", run: (app) => app.editor.duplicate() },
  { keys: "Mod+A", label: "Select all", run: (app) => app.editor.selectAll() },
  { keys: "Delete", label: "Delete the selection", run: (app) => app.editor.deleteSelected() },
  { keys: "Backspace", label: "Delete the selection", run: (app) => app.editor.deleteSelected(), hidden: true },
  { keys: "Mod+B", label: "Bypass the selected nodes (again: undo)", run: (app) => app.editor.setMode(app.editor.selectedNodes(), app.MODE.BYPASS) },
  { keys: "Mod+M", label: "Mute the selected nodes (again: undo)", run: (app) => app.editor.setMode(app.editor.selectedNodes(), app.MODE.NEVER) },
  { keys: "Alt+C", label: "Collapse / expand the selected nodes", run: (app) => app.editor.toggleCollapsed() },
  { keys: "P", label: "Pin / unpin the selected nodes", run: (app) => app.editor.togglePinned() },
  { keys: "Mod+G", label: "Group the selected nodes", run: (app) => app.groupSelection() },
  { keys: "Mod+Shift+E", label: "Convert the selection into a subgraph", run: (app) => app.subgraphUi.convert() },
  { keys: "Mod+S", label: "Save the workflow", run: (app) => app.saveWorkflow(), typing: true },
  { keys: "Mod+Shift+S", label: "Save the workflow as…", run: (app) => app.saveWorkflow({ as: true }), typing: true },
  { keys: "Mod+O", label: "Open a workflow file", run: (app) => app.openFromDisk() },
  { keys: "Alt+N", label: "New workflow tab", run: (app) => app.tabs.newTab() },
  { keys: "Escape", label: "Close the open dialog or menu", run: (app) => app.closeDialogs(), passThrough: true },
];

/** Mouse gestures, listed with the shortcuts. */
export const GESTURES = [
  ["Double-click the canvas", "Search for a node to add"],
  ["Drag a link onto a widget", "Drive the widget from the link"],
  ["Drag a link off an input", "Move or remove it"],
  ["Ctrl+drag on the canvas", "Select the nodes in a box"],
  ["Shift+click", "Add to the selection"],
  ["Alt+drag a node", "Copy it"],
  ["Double-click a subgraph", "Open it (the breadcrumb goes back up)"],
  ["Double-click a node title", "Rename the node"],
];

function comboOf(event) {
  const parts = [];
  if (event.ctrlKey || event.metaKey) parts.push("Mod");
  if (event.altKey) parts.push("Alt");
  if (event.shiftKey) parts.push("Shift");
  const key = event.key.length === 1 ? event.key.toUpperCase() : event.key;
  parts.push(key);
  return parts.join("+").toLowerCase();
}

export function installShortcuts(app, target = document) {
  const byCombo = new Map(SHORTCUTS.map((s) => [s.keys.toLowerCase(), s]));
  target.addEventListener("keydown", (event) => {
    if (event.repeat && event.key !== "Delete") return;
    const shortcut = byCombo.get(comboOf(event));
    if (!shortcut) return;
    const el = event.target;
    const typing = el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el?.isContentEditable;
    if (typing && !shortcut.typing) return;
    if (document.querySelector(".ng-modal") && !shortcut.passThrough) return;
    if (shortcut.native) { // the paste event follows
      app.pasteKeepsLinks = event.shiftKey;
      event.stopPropagation();
      return;
    }
    // Each edit by key is one undo step of its own, however fast the keys come.
    if (!shortcut.history) app.undo.checkpoint();
    shortcut.run(app, event);
    if (!shortcut.history) app.undo.checkpoint();
    if (!shortcut.passThrough) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
}

/** "Mod+Shift+Z" as shown to a person. */
export function keyLabel(keys) {
  const mac = /Mac|iPhone|iPad/.test(navigator.platform);
  return keys.replace("Mod", mac ? "⌘" : "Ctrl");
}
