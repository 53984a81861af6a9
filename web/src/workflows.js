// Workflows on the server (user/default/workflows/*.json through the /userdata routes ComfyUI uses):
// save, save as, open, rename and delete; the recently opened ones; and the shipped example
// workflows as templates (/workflow_templates). The sidebar's Workflows panel shows all three.

import { ask } from "./modal.js";

const RECENT = "nodegraph.recent";
const RECENT_MAX = 8;

/** "my flow" → "my flow.json"; null for a name that cannot be a file under workflows/. */
export function workflowFileName(text) {
  let name = String(text ?? "").trim();
  if (!name) return null;
  if (!name.endsWith(".json")) name += ".json";
  if (/[\\\0]|(^|\/)\.\.?(\/|$)|^\//.test(name)) return null;
  return name;
}

export function recentWorkflows() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT) ?? "[]");
    return Array.isArray(list) ? list.filter((n) => typeof n === "string") : [];
  } catch {
    return [];
  }
}

function setRecent(list) {
  try { localStorage.setItem(RECENT, JSON.stringify(list.slice(0, RECENT_MAX))); } catch { /* storage off */ }
}

export class WorkflowFiles {
  /** `app`: {api, editor, tabs, notify(message, kind)}; `panel`: the element the list goes in. */
  constructor(app, panel) {
    this.app = app;
    this.panel = panel;
  }

  #remember(name, replaced = null) {
    setRecent([name, ...recentWorkflows().filter((n) => n !== name && n !== replaced)].filter(Boolean));
  }

  async #askName(title, value, action = "save") {
    for (;;) {
      const answer = await ask({
        title, message: "Saved on the server, in user/default/workflows/", value, placeholder: "workflow name",
        buttons: [{ label: "Cancel", value: "cancel" }, { label: action === "save" ? "Save" : "Rename", value: action, primary: true }],
      });
      if (answer.action !== action) return null;
      const name = workflowFileName(answer.value);
      if (name) return name;
      this.app.notify("A workflow name cannot be empty or contain '..' or '\\'.", "error");
      value = answer.value;
    }
  }

  async #mayOverwrite(name) {
    const names = await this.app.api.listWorkflows();
    if (!names.includes(name)) return true;
    const { action } = await ask({
      title: "Replace it?", message: `A workflow named “${name.replace(/\.json$/, "")}” is already on the server.`,
      buttons: [{ label: "Cancel", value: "cancel" }, { label: "Replace", value: "replace", primary: true }],
    });
    return action === "replace";
  }

  /** Save the active tab (as a new name when it has none or `as`); the saved name, or null. */
  async save({ as = false } = {}) {
    const { tabs, api, editor } = this.app;
    const tab = tabs.current;
    let name = tab.name;
    if (!name || as) {
      name = await this.#askName(as ? "Save workflow as" : "Save workflow", tabs.title(tab));
      if (!name) return null;
      if (name !== tab.name && !(await this.#mayOverwrite(name))) return null;
    }
    try {
      await api.saveWorkflow(name, editor.serialize(), { overwrite: true });
    } catch (error) {
      this.app.notify(`Could not save ${name}: ${error.message}`, "error");
      return null;
    }
    tabs.markSaved(tab, name);
    this.#remember(name);
    this.app.notify(`Saved ${name.replace(/\.json$/, "")}`);
    this.refresh();
    return name;
  }

  async open(name) {
    try {
      const workflow = await this.app.api.loadWorkflow(name);
      this.app.tabs.open(workflow, { name });
      this.#remember(name);
      this.refresh();
    } catch (error) {
      this.app.notify(`Could not open ${name}: ${error.message}`, "error");
    }
  }

  async rename(name) {
    const to = await this.#askName("Rename workflow", name.replace(/\.json$/, ""), "rename");
    if (!to || to === name) return;
    try {
      await this.app.api.renameWorkflow(name, to);
    } catch (error) {
      this.app.notify(error.status === 409 ? `“${to}” already exists.` : error.message, "error");
      return;
    }
    this.app.tabs.renamed(name, to);
    this.#remember(to, name);
    this.refresh();
  }

  async remove(name) {
    const { action } = await ask({
      title: "Delete workflow?", message: `“${name.replace(/\.json$/, "")}” is deleted from the server.`,
      buttons: [{ label: "Cancel", value: "cancel" }, { label: "Delete", value: "delete", primary: true }],
    });
    if (action !== "delete") return;
    await this.app.api.deleteWorkflow(name);
    this.app.tabs.renamed(name, null);
    setRecent(recentWorkflows().filter((n) => n !== name));
    this.refresh();
  }

  async openTemplate(module, name) {
    try {
      this.app.tabs.open(await this.app.api.template(module, name), { title: name });
    } catch (error) {
      this.app.notify(`Could not open the template ${name}: ${error.message}`, "error");
    }
  }

  refresh() {
    if (this.panel.isConnected && !this.panel.hidden) this.render().catch(() => {});
  }

  async render() {
    const [names, templates] = await Promise.all([this.app.api.listWorkflows(), this.app.api.templates().catch(() => ({}))]);
    const panel = this.panel;
    panel.replaceChildren();
    const actions = document.createElement("div");
    actions.className = "actions";
    for (const [label, as] of [["Save", false], ["Save as…", true]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.action = as ? "save-as" : "save";
      button.addEventListener("click", () => this.save({ as }));
      actions.append(button);
    }
    panel.append(actions);

    const section = (title, items, build, empty) => {
      const h = document.createElement("h3");
      h.textContent = title;
      const list = document.createElement("ul");
      list.className = "workflow-list";
      list.dataset.section = title.toLowerCase();
      for (const item of items) list.append(build(item));
      if (!items.length) list.append(Object.assign(document.createElement("li"), { className: "empty", textContent: empty }));
      panel.append(h, list);
    };
    const entry = (name, onOpen, extra = []) => {
      const li = document.createElement("li");
      li.dataset.name = name;
      const open = Object.assign(document.createElement("button"), { type: "button", className: "open", textContent: name.replace(/\.json$/, "") });
      open.addEventListener("click", onOpen);
      li.append(open);
      for (const [label, cls, handler] of extra) {
        const b = Object.assign(document.createElement("button"), { type: "button", className: cls, textContent: label, title: label });
        b.addEventListener("click", handler);
        li.append(b);
      }
      return li;
    };
    section("On the server", names, (name) => entry(name, () => this.open(name), [
      ["Rename", "rename", () => this.rename(name)], ["Delete", "delete", () => this.remove(name)]]), "No saved workflows yet");
    const recent = recentWorkflows().filter((n) => names.includes(n));
    section("Recent", recent, (name) => entry(name, () => this.open(name)), "Nothing opened yet");
    const shipped = Object.entries(templates).flatMap(([module, list]) => (list ?? []).map((name) => ({ module, name })));
    section("Templates", shipped, ({ module, name }) => {
      const li = entry(name, () => this.openTemplate(module, name));
      li.dataset.template = name;
      return li;
    }, "No templates");
  }
}
