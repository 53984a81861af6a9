// The node search (double-click the canvas, or the "Add node" button) and the category menu.
// Matches display names, class names and categories; a link dropped on empty canvas with Shift
// opens it filtered to nodes that take (or give) that link's type, and connects the new node.

import { typesCompatible } from "./convert.js";

/** Score how well `query` matches `entry` (higher is better; 0 = no match). */
export function score(entry, query) {
  const q = query.trim().toLowerCase();
  if (!q) return 1;
  const title = entry.title.toLowerCase();
  const type = entry.type.toLowerCase();
  const haystack = `${title} ${type} ${entry.category.toLowerCase()}`;
  let best = 0;
  for (const [text, weight] of [[title, 1], [type, 0.9]]) {
    if (text === q) best = Math.max(best, 100 * weight);
    else if (text.startsWith(q)) best = Math.max(best, 80 * weight);
    else if (text.split(/[\s_()/-]+/).some((w) => w.startsWith(q))) best = Math.max(best, 60 * weight);
    else if (text.includes(q)) best = Math.max(best, 40 * weight);
  }
  if (!best) {
    const words = q.split(/\s+/);
    if (words.every((w) => haystack.includes(w))) best = 30;
    else if (isSubsequence(q.replaceAll(" ", ""), title.replaceAll(" ", ""))) best = 10;
  }
  if (best && entry.deprecated) best -= 5;
  return best;
}

function isSubsequence(needle, haystack) {
  let i = 0;
  for (const c of haystack) if (c === needle[i]) i += 1;
  return i === needle.length;
}

export class NodeSearch {
  /** `app`: {catalogue(), addNode(type, graphPos, link?)} */
  constructor(app) {
    this.app = app;
    this.root = null;
  }

  get isOpen() {
    return Boolean(this.root);
  }

  /** Open at client position; `link`: {node, slot, kind: "output"|"input", type} to connect to. */
  open({ clientX, clientY, graphPos, link = null } = {}) {
    this.close();
    const root = document.createElement("div");
    root.className = "ng-search";
    root.innerHTML = `<input type="text" placeholder="Search nodes…" aria-label="Search nodes" spellcheck="false">
      <div class="ng-search-filter"></div><ul role="listbox"></ul>`;
    const input = root.querySelector("input");
    const list = root.querySelector("ul");
    if (link) root.querySelector(".ng-search-filter").textContent = `${link.kind === "output" ? "takes" : "gives"} ${link.type}`;
    document.body.append(root);
    const width = 420;
    const left = Math.min(Math.max(8, (clientX ?? innerWidth / 2) - 40), innerWidth - width - 8);
    const top = Math.min(Math.max(8, (clientY ?? innerHeight / 3) - 20), innerHeight - 360);
    Object.assign(root.style, { left: `${left}px`, top: `${top}px`, width: `${width}px` });
    this.root = root;
    let results = [];
    let selected = 0;
    const render = () => {
      const query = input.value;
      results = this.app.catalogue()
        .filter((e) => !link || (link.kind === "output" ? e.inputs.some((t) => typesCompatible(link.type, t))
                                                          : e.outputs.some((t) => typesCompatible(t, link.type))))
        .map((e) => ({ e, s: score(e, query) }))
        .filter((r) => r.s > 0)
        .sort((a, b) => b.s - a.s || a.e.title.localeCompare(b.e.title))
        .slice(0, 60)
        .map((r) => r.e);
      selected = Math.min(selected, Math.max(0, results.length - 1));
      list.replaceChildren(...results.map((e, i) => {
        const li = document.createElement("li");
        li.dataset.type = e.type;
        li.className = i === selected ? "selected" : "";
        li.innerHTML = `<span class="title"></span><span class="category"></span>`;
        li.querySelector(".title").textContent = e.title;
        li.querySelector(".category").textContent = e.category;
        li.title = e.description;
        li.addEventListener("pointerdown", (ev) => { ev.preventDefault(); choose(e.type); });
        return li;
      }));
      if (!results.length) {
        const li = document.createElement("li");
        li.className = "empty";
        li.textContent = "No matching node";
        list.append(li);
      }
    };
    const choose = (type) => {
      this.close();
      this.app.addNode(type, graphPos, link);
    };
    input.addEventListener("input", () => { selected = 0; render(); });
    input.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "ArrowDown") { selected = Math.min(results.length - 1, selected + 1); render(); e.preventDefault(); }
      else if (e.key === "ArrowUp") { selected = Math.max(0, selected - 1); render(); e.preventDefault(); }
      else if (e.key === "Enter") { e.preventDefault(); if (results[selected]) choose(results[selected].type); }
      else if (e.key === "Escape") { e.preventDefault(); this.close(); }
    });
    // The canvas takes focus back after the double-click that opened this: keep it here until
    // the user clicks elsewhere.
    input.addEventListener("blur", () => setTimeout(() => { if (this.root === root) input.focus(); }, 0));
    this.outside = (e) => { if (!root.contains(e.target)) this.close(); };
    document.addEventListener("pointerdown", this.outside, true);
    render();
    input.focus();
  }

  close() {
    if (this.outside) document.removeEventListener("pointerdown", this.outside, true);
    this.outside = null;
    this.root?.remove();
    this.root = null;
  }
}

/** A category tree {name: {children, nodes}} for the "Add node" menu. */
export function categoryTree(entries) {
  const root = { children: new Map(), nodes: [] };
  for (const entry of entries) {
    let at = root;
    for (const part of entry.category.split("/").filter(Boolean)) {
      if (!at.children.has(part)) at.children.set(part, { children: new Map(), nodes: [] });
      at = at.children.get(part);
    }
    at.nodes.push(entry);
  }
  return root;
}

/** A cascading DOM menu of categories → nodes at a client position. */
export function openCategoryMenu(entries, { clientX, clientY, onChoose }) {
  document.querySelectorAll(".ng-menu").forEach((m) => m.remove());
  const tree = categoryTree(entries);
  const menus = [];
  const closeFrom = (depth) => { while (menus.length > depth) menus.pop().remove(); };
  const show = (branch, x, y, depth) => {
    closeFrom(depth);
    const menu = document.createElement("div");
    menu.className = "ng-menu";
    const items = [
      ...[...branch.children.keys()].sort().map((name) => ({ name, branch: branch.children.get(name) })),
      ...branch.nodes.sort((a, b) => a.title.localeCompare(b.title)).map((node) => ({ name: node.title, node })),
    ];
    for (const item of items) {
      const el = document.createElement("div");
      el.className = item.branch ? "item submenu" : "item";
      el.textContent = item.name;
      if (item.node) el.dataset.type = item.node.type;
      el.addEventListener("pointerenter", () => {
        if (item.branch) {
          const r = el.getBoundingClientRect();
          show(item.branch, r.right, r.top, depth + 1);
        } else {
          closeFrom(depth + 1);
        }
      });
      el.addEventListener("click", () => {
        if (item.node) { closeFrom(0); onChoose(item.node.type); }
      });
      menu.append(el);
    }
    document.body.append(menu);
    const rect = menu.getBoundingClientRect();
    menu.style.left = `${Math.min(x, innerWidth - rect.width - 4)}px`;
    menu.style.top = `${Math.max(4, Math.min(y, innerHeight - rect.height - 4))}px`;
    menus.push(menu);
  };
  show(tree, clientX, clientY, 0);
  const dismiss = (e) => {
    if (menus.some((m) => m.contains(e.target))) return;
    closeFrom(0);
    document.removeEventListener("pointerdown", dismiss, true);
  };
  setTimeout(() => document.addEventListener("pointerdown", dismiss, true), 0);
}
