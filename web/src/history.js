// Undo / redo by snapshots: after each edit the graph is serialized and compared with the last
// state (the view — pan and zoom — is not an edit). Ctrl+Z / Ctrl+Y / Ctrl+Shift+Z.

const LIMIT = 50;

/** The graph as a string for comparing states: not the view (pan, zoom), and nodes in id order
 * (clicking a node brings it to the front, which reorders the saved list but changes nothing). */
export function key(workflow) {
  const { extra, ...rest } = workflow;
  const { ds, ...extraRest } = extra ?? {};
  const byId = (nodes) => [...(nodes ?? [])].sort((a, b) => String(a.id).localeCompare(String(b.id), "en", { numeric: true }));
  const definitions = rest.definitions?.subgraphs
    ? { subgraphs: rest.definitions.subgraphs.map((d) => ({ ...d, nodes: byId(d.nodes) })) } : rest.definitions;
  return JSON.stringify({ ...rest, nodes: byId(rest.nodes), definitions, extra: extraRest });
}

export class UndoHistory {
  constructor(editor) {
    this.editor = editor;
    this.undoStack = [];
    this.redoStack = [];
    this.current = null;
    this.restoring = false;
  }

  /** Start over from the graph as it is (after loading a workflow). */
  reset() {
    this.undoStack = [];
    this.redoStack = [];
    this.current = key(this.editor.serialize());
  }

  /** The stacks and the current state, to keep with an inactive tab. */
  snapshot() {
    return { undoStack: this.undoStack, redoStack: this.redoStack, current: this.current };
  }

  /** Take over a tab's history (after its graph was loaded). */
  restore(state) {
    if (!state) { this.reset(); return; }
    this.undoStack = state.undoStack;
    this.redoStack = state.redoStack;
    this.current = state.current;
  }

  /** Record the graph if it changed since the last checkpoint. */
  checkpoint() {
    if (this.restoring) return;
    const now = key(this.editor.serialize());
    if (now === this.current) return;
    if (this.current !== null) {
      this.undoStack.push(this.current);
      if (this.undoStack.length > LIMIT) this.undoStack.shift();
    }
    this.redoStack = [];
    this.current = now;
  }

  undo() { return this.#move(this.undoStack, this.redoStack); }
  redo() { return this.#move(this.redoStack, this.undoStack); }

  #move(from, to) {
    this.checkpoint();
    if (!from.length) return false;
    to.push(this.current);
    this.current = from.pop();
    this.restoring = true;
    try {
      this.editor.load(JSON.parse(this.current), { keepView: true });
    } finally {
      this.restoring = false;
    }
    return true;
  }
}
