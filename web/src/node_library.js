// The node library: every node by category in a tree, with a search box that narrows it. Click a
// node to add it in the middle of the view, or drag it onto the canvas.

import { categoryTree, score } from "./search.js";

export const NODE_DRAG_TYPE = "application/x-nodegraph-node";

export class NodeLibrary {
  /** `app`: {catalogue, addNode(type, graphPos)}; `panel`: the sidebar section. */
  constructor(app, panel) {
    this.app = app;
    this.panel = panel;
    this.query = "";
  }

  async render() {
    const panel = this.panel;
    if (!panel.querySelector("input")) {
      panel.innerHTML = `<input type="search" class="filter" placeholder="Filter nodes…" aria-label="Filter nodes" spellcheck="false">
        <div class="tree"></div>`;
      panel.querySelector("input").addEventListener("input", (e) => { this.query = e.target.value; this.#fill(); });
    }
    this.#fill();
  }

  #fill() {
    const tree = this.panel.querySelector(".tree");
    const query = this.query.trim();
    const entries = this.app.catalogue.filter((e) => !query || score(e, query) > 0)
      .sort((a, b) => a.title.localeCompare(b.title));
    const root = categoryTree(entries);
    const build = (branch, path) => {
      const list = document.createElement("ul");
      for (const name of [...branch.children.keys()].sort()) {
        const li = document.createElement("li");
        const details = document.createElement("details");
        details.open = Boolean(query);
        details.dataset.category = [...path, name].join("/");
        const summary = document.createElement("summary");
        summary.textContent = name;
        details.append(summary, build(branch.children.get(name), [...path, name]));
        li.append(details);
        list.append(li);
      }
      for (const entry of branch.nodes) {
        const li = document.createElement("li");
        li.className = "node";
        li.dataset.type = entry.type;
        li.draggable = true;
        li.textContent = entry.title;
        li.title = entry.description || entry.type;
        li.addEventListener("click", () => this.app.addNode(entry.type, null));
        li.addEventListener("dragstart", (e) => {
          e.dataTransfer.setData(NODE_DRAG_TYPE, entry.type);
          e.dataTransfer.effectAllowed = "copy";
        });
        list.append(li);
      }
      return list;
    };
    tree.replaceChildren(build(root, []));
    if (!entries.length) tree.textContent = "No matching node";
  }
}
