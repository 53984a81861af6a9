// Workflow tabs: several workflows open at once, each with its own undo history and view. The graph
// on the canvas is the active tab's; the others are kept serialized. A tab knows the server file it
// was opened from or saved to (its name), and whether it changed since (a • in the tab bar); closing
// a changed tab asks whether to save it. The open tabs come back after a reload.

import { key } from "./history.js";
import { ask } from "./modal.js";

const STORAGE = "nodegraph.tabs";
const LEGACY_STORAGE = "nodegraph.workflow"; // the single last workflow of earlier versions

let nextId = 1;

export class WorkflowTabs {
  /** `app`: {editor, undo, loadIntoEditor(workflow, {keepView}), saveWorkflow({tab}), onActivated(tab)}. */
  constructor(app, bar) {
    this.app = app;
    this.bar = bar;
    this.tabs = [];
    this.active = null;
  }

  get current() {
    return this.active;
  }

  title(tab) {
    return tab.name ? tab.name.replace(/\.json$/, "") : tab.title ?? "Unsaved workflow";
  }

  /** Has the tab's graph changed since it was opened or saved? */
  isModified(tab) {
    const now = tab === this.active ? this.app.undo.current : tab.history?.current;
    return tab.savedKey !== now;
  }

  /** Open a workflow: the tab already showing that server file, the active tab when it is an empty
   * unchanged one, else a new tab. */
  open(workflow, { name = null, title = null } = {}) {
    const existing = name && this.tabs.find((t) => t.name === name);
    if (existing && !this.isModified(existing)) {
      this.switchTo(existing);
      return existing;
    }
    const blank = this.active && !this.active.name && !this.app.editor.graph._nodes.length && !this.isModified(this.active);
    const tab = blank ? this.active : this.#add({ name, title });
    tab.name = name;
    tab.title = title;
    if (tab !== this.active) this.#stash();
    this.active = tab;
    this.app.loadIntoEditor(workflow);
    this.markSaved(tab);
    this.#activated();
    return tab;
  }

  newTab() {
    return this.open({ last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4 },
      { title: "Unsaved workflow" });
  }

  switchTo(tab) {
    if (tab === this.active) return;
    this.#stash();
    this.#show(tab);
  }

  /** Put a stashed tab on the canvas with its history. */
  #show(tab) {
    const unchanged = !this.isModified(tab);
    this.active = tab;
    this.app.loadIntoEditor(tab.workflow, { keepView: false });
    this.app.undo.restore(tab.history);
    // The canvas may save a stored graph a little differently (e.g. an older file's shape):
    // that is not a change.
    const now = key(this.app.editor.serialize());
    if (now !== this.app.undo.current) {
      this.app.undo.current = now;
      if (unchanged) tab.savedKey = now;
    }
    tab.workflow = null;
    this.#activated();
  }

  /** Close a tab; a changed one asks first (save, discard or keep it open). */
  async close(tab = this.active) {
    if (tab === this.active) this.app.undo.checkpoint();
    if (this.isModified(tab)) {
      const { action } = await ask({
        title: "Save changes?",
        message: `“${this.title(tab)}” has changes that are not saved.`,
        buttons: [{ label: "Cancel", value: "cancel" }, { label: "Don't save", value: "discard" },
                  { label: "Save", value: "save", primary: true }],
      });
      if (action === "cancel") return false;
      if (action === "save") {
        if (tab !== this.active) this.switchTo(tab);
        if (!(await this.app.saveWorkflow())) return false;
      }
    }
    const index = this.tabs.indexOf(tab);
    this.tabs.splice(index, 1);
    if (tab === this.active) {
      this.active = null;
      const next = this.tabs[Math.min(index, this.tabs.length - 1)];
      if (next) {
        this.#show(next);
      } else {
        this.newTab();
      }
    } else {
      this.render();
      this.persist();
    }
    return true;
  }

  /** The active tab now matches what is on the server under `name`. */
  markSaved(tab = this.active, name = tab.name) {
    tab.name = name;
    if (tab === this.active) {
      this.app.undo.checkpoint();
      tab.savedKey = this.app.undo.current;
    } else {
      tab.savedKey = tab.history?.current;
    }
    this.render();
    this.persist();
  }

  /** A server file was renamed or deleted: tabs showing it follow. */
  renamed(from, to) {
    for (const tab of this.tabs) if (tab.name === from) tab.name = to;
    this.render();
    this.persist();
  }

  #add({ name, title }) {
    const tab = { id: nextId++, name, title, workflow: null, history: null, savedKey: null };
    this.tabs.push(tab);
    return tab;
  }

  #stash() {
    const tab = this.active;
    if (!tab) return;
    this.app.undo.checkpoint();
    tab.workflow = this.app.editor.serialize();
    tab.history = this.app.undo.snapshot();
  }

  #activated() {
    this.app.onActivated?.(this.active);
    this.render();
    this.persist();
  }

  /** After each edit: the • of the active tab, and the tabs kept for the next visit. */
  changed() {
    this.render();
    this.persist();
  }

  render() {
    const bar = this.bar;
    bar.replaceChildren();
    for (const tab of this.tabs) {
      const el = document.createElement("div");
      el.className = `tab${tab === this.active ? " active" : ""}`;
      el.dataset.id = String(tab.id);
      el.dataset.modified = String(this.isModified(tab));
      el.title = tab.name ? `user/default/workflows/${tab.name}` : this.title(tab);
      el.innerHTML = `<span class="title"></span><span class="dot" aria-label="unsaved changes">•</span>
        <button type="button" class="close" title="Close">×</button>`;
      el.querySelector(".title").textContent = this.title(tab);
      el.addEventListener("pointerdown", (e) => { if (!e.target.closest(".close") && e.button === 0) this.switchTo(tab); });
      el.addEventListener("auxclick", (e) => { if (e.button === 1) this.close(tab); });
      el.querySelector(".close").addEventListener("click", () => this.close(tab));
      bar.append(el);
    }
    const add = document.createElement("button");
    add.type = "button";
    add.className = "new-tab";
    add.title = "New workflow tab (Alt+N)";
    add.textContent = "+";
    add.addEventListener("click", () => this.newTab());
    bar.append(add);
  }

  persist() {
    try {
      const tabs = this.tabs.map((tab) => ({
        name: tab.name, title: tab.title, modified: this.isModified(tab),
        workflow: tab === this.active ? this.app.editor.serialize() : tab.workflow,
      }));
      localStorage.setItem(STORAGE, JSON.stringify({ active: this.tabs.indexOf(this.active), tabs }));
    } catch {
      // Storage full or disabled: the workflows are still on the server and in files.
    }
  }

  /** The tabs of the last visit (or its single workflow); false when there were none. */
  restore() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE) ?? "null");
      if (!saved?.tabs?.length) {
        const legacy = JSON.parse(localStorage.getItem(LEGACY_STORAGE) ?? "null");
        if (legacy?.workflow?.nodes) saved = { active: 0, tabs: [{ name: legacy.name, workflow: legacy.workflow, modified: false }] };
      }
    } catch {
      saved = null;
    }
    const usable = (saved?.tabs ?? []).filter((t) => t?.workflow?.nodes);
    if (!usable.length) return false;
    for (const entry of usable) {
      const tab = this.#add({ name: entry.name ?? null, title: entry.title ?? null });
      tab.workflow = entry.workflow;
      tab.history = { undoStack: [], redoStack: [], current: key(entry.workflow) };
      tab.savedKey = entry.modified ? null : tab.history.current;
    }
    this.#show(this.tabs[Math.max(0, Math.min(saved.active ?? 0, this.tabs.length - 1))]);
    return true;
  }
}
