// Named workflows kept on the server (user/default/workflows/*.json via /userdata), and the
// workflow last open in this browser (localStorage), restored on the next visit.

const LAST_KEY = "nodegraph.workflow";

export function rememberWorkflow(workflow, name) {
  try {
    localStorage.setItem(LAST_KEY, JSON.stringify({ workflow, name }));
  } catch {
    // Storage full or disabled: the user still has files and the server.
  }
}

export function lastWorkflow() {
  try {
    const saved = JSON.parse(localStorage.getItem(LAST_KEY) ?? "null");
    return saved?.workflow?.nodes ? saved : null;
  } catch {
    return null;
  }
}

export function forgetWorkflow() {
  localStorage.removeItem(LAST_KEY);
}

/** The dialog listing saved workflows: open, save current as…, delete. */
export class WorkflowBrowser {
  constructor({ api, dialog, current, onOpen, onSaved, notify }) {
    this.api = api;
    this.dialog = dialog;
    this.current = current; // () => {workflow, name}
    this.onOpen = onOpen;
    this.onSaved = onSaved;
    this.notify = notify;
  }

  async open() {
    this.dialog.hidden = false;
    await this.render();
  }

  close() {
    this.dialog.hidden = true;
  }

  async save(name) {
    let file = name.trim();
    if (!file) return null;
    if (!file.endsWith(".json")) file += ".json";
    if (/[\\]|(^|\/)\.\.(\/|$)/.test(file)) throw new Error("a workflow name cannot contain '..' or '\\'");
    await this.api.saveWorkflow(file, this.current().workflow, { overwrite: true });
    this.onSaved(file);
    return file;
  }

  async render() {
    const names = await this.api.listWorkflows();
    const body = this.dialog.querySelector(".body");
    body.replaceChildren();
    const form = document.createElement("form");
    form.className = "save";
    form.innerHTML = `<input name="name" placeholder="workflow name" aria-label="workflow name">
      <button type="submit">Save current</button>`;
    form.querySelector("input").value = (this.current().name ?? "").replace(/\.json$/, "");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const saved = await this.save(form.querySelector("input").value);
        if (saved) this.notify(`Saved ${saved} on the server`);
        await this.render();
      } catch (error) {
        this.notify(String(error.message ?? error), "error");
      }
    });
    body.append(form);
    const list = document.createElement("ul");
    list.className = "workflow-list";
    if (!names.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No saved workflows yet";
      list.append(li);
    }
    for (const name of names) {
      const li = document.createElement("li");
      li.dataset.name = name;
      li.innerHTML = `<button type="button" class="open"></button><button type="button" class="delete" title="Delete">Delete</button>`;
      li.querySelector(".open").textContent = name.replace(/\.json$/, "");
      li.querySelector(".open").addEventListener("click", async () => {
        const workflow = await this.api.loadWorkflow(name);
        this.close();
        this.onOpen(workflow, name);
      });
      li.querySelector(".delete").addEventListener("click", async () => {
        if (!confirm(`Delete ${name}?`)) return;
        await this.api.deleteWorkflow(name);
        await this.render();
      });
      list.append(li);
    }
    body.append(list);
  }
}
