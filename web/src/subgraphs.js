// Subgraphs in the app: Ctrl+Shift+E (or the node menu) turns the selection into a subgraph,
// double-click or the title button opens one, the breadcrumb over the canvas goes back up, and
// the node menu unpacks an instance. Saved in ComfyUI's format (`definitions.subgraphs`) by the
// canvas library; queued flattened (flatten.js).

export class SubgraphUi {
  constructor({ editor, breadcrumb, notify }) {
    this.editor = editor;
    this.breadcrumb = breadcrumb;
    this.notify = notify;
    editor.addEventListener("graph-changed", () => this.render());
    editor.addEventListener("node-menu", ({ detail }) => this.#menu(detail));
    editor.addEventListener("canvas-menu", ({ detail }) => {
      if (editor.selectedNodes().length) detail.options.push({ content: "Convert to Subgraph", callback: () => this.convert() });
    });
    this.render();
  }

  convert() {
    const node = this.editor.subgraphs.convertSelection();
    if (!node) this.notify("Select the nodes to put in a subgraph first.", "warning");
    return node;
  }

  #menu({ node, options }) {
    if (this.editor.selectedNodes().length) options.push({ content: "Convert to Subgraph", callback: () => this.convert() });
    if (node.subgraph) {
      options.push({ content: "Open subgraph", callback: () => this.editor.subgraphs.open(node) });
      options.push({ content: "Unpack subgraph", callback: () => this.editor.subgraphs.unpack(node) });
    }
  }

  /** "Workflow › Outer › Inner": each step but the last goes back up to it. */
  render() {
    const { path } = this.editor.subgraphs;
    const bar = this.breadcrumb;
    bar.replaceChildren();
    bar.hidden = !path.length;
    if (!path.length) return;
    const steps = [{ title: "Workflow" }, ...path.map((n) => ({ title: n.subgraph?.name || n.title }))];
    steps.forEach((step, level) => {
      if (level) bar.append(Object.assign(document.createElement("span"), { className: "sep", textContent: "›" }));
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.level = String(level);
      button.textContent = step.title;
      if (level === steps.length - 1) {
        button.className = "current";
        button.title = "Double-click to rename this subgraph";
        button.addEventListener("dblclick", () => this.#rename(path.at(-1)));
      } else {
        button.addEventListener("click", () => this.editor.subgraphs.up(level));
      }
      bar.append(button);
    });
  }

  #rename(instance) {
    const name = prompt("Subgraph name", instance.subgraph.name);
    if (!name?.trim()) return;
    instance.subgraph.name = name.trim();
    this.editor.changed();
    this.render();
  }
}
