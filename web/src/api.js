// The HTTP side of the ComfyUI-compatible API (see docs/server.md): one function per route the
// editor uses. Errors become ApiError carrying the server's JSON body (validation errors included).

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(base = "") {
    this.base = base.replace(/\/$/, "");
  }

  url(path) {
    return `${this.base}/api${path}`;
  }

  async request(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
    const init = { method, headers: { ...headers } };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    const response = await fetch(this.url(path), init);
    if (!response.ok) {
      let payload = null;
      const text = await response.text();
      try { payload = JSON.parse(text); } catch { payload = text; }
      const message = payload?.error?.message ?? payload?.error ?? (typeof payload === "string" && payload) ?? response.statusText;
      throw new ApiError(`${method} ${path}: ${response.status} ${message}`, response.status, payload);
    }
    if (raw) return response;
    const type = response.headers.get("Content-Type") ?? "";
    if (response.status === 204) return null;
    return type.includes("json") ? response.json() : response.text();
  }

  objectInfo() { return this.request("/object_info"); }
  objectInfoOf(type) { return this.request(`/object_info/${encodeURIComponent(type)}`); }

  /** POST /prompt. Resolves {prompt_id, number, node_errors}; a validation failure throws ApiError whose
   * body is {error, node_errors}. */
  queuePrompt(prompt, { clientId, workflow, front = false } = {}) {
    const json = { prompt, client_id: clientId, extra_data: { extra_pnginfo: { workflow } } };
    if (front) json.front = true;
    return this.request("/prompt", { method: "POST", json });
  }

  queue() { return this.request("/queue"); }
  deleteFromQueue(ids) { return this.request("/queue", { method: "POST", json: { delete: ids } }); }
  clearQueue() { return this.request("/queue", { method: "POST", json: { clear: true } }); }
  history(maxItems = 20) { return this.request(`/history?max_items=${maxItems}`); }
  clearHistory() { return this.request("/history", { method: "POST", json: { clear: true } }); }
  interrupt(promptId) { return this.request("/interrupt", { method: "POST", json: promptId ? { prompt_id: promptId } : {} }); }

  /** The URL of an output/input/temp image, for <img src>. */
  viewUrl({ filename, subfolder = "", type = "output" }, extra = {}) {
    const params = new URLSearchParams({ filename, subfolder, type, ...extra });
    return this.url(`/view?${params}`);
  }

  async uploadImage(file, { overwrite = false, subfolder = "" } = {}) {
    const form = new FormData();
    form.append("image", file, file.name || "pasted.png");
    form.append("type", "input");
    if (subfolder) form.append("subfolder", subfolder);
    if (overwrite) form.append("overwrite", "true");
    return this.request("/upload/image", { method: "POST", body: form });
  }

  // Named workflows: user/default/workflows/<name>.json through /userdata.
  async listWorkflows() {
    try {
      const files = await this.request("/userdata?dir=workflows&recurse=true&split=false");
      return files.filter((f) => f.endsWith(".json")).sort((a, b) => a.localeCompare(b));
    } catch (error) {
      if (error.status === 404) return [];
      throw error;
    }
  }
  async loadWorkflow(name) {
    const response = await this.request(`/userdata/${encodeURIComponent(`workflows/${name}`)}`, { raw: true });
    return response.json();
  }
  saveWorkflow(name, workflow, { overwrite = true } = {}) {
    return this.request(`/userdata/${encodeURIComponent(`workflows/${name}`)}?overwrite=${overwrite}`, {
      method: "POST", body: JSON.stringify(workflow), headers: { "Content-Type": "application/json" },
    });
  }
  deleteWorkflow(name) {
    return this.request(`/userdata/${encodeURIComponent(`workflows/${name}`)}`, { method: "DELETE" });
  }

  /** POST /userdata/workflows%2F<from>/move/workflows%2F<to>; 409 if `to` exists. */
  renameWorkflow(from, to) {
    const path = (name) => encodeURIComponent(`workflows/${name}`);
    return this.request(`/userdata/${path(from)}/move/${path(to)}?overwrite=false`, { method: "POST" });
  }

  /** The shipped example workflows: {module: [names]}, each at /workflow_templates/<module>/<name>.json. */
  templates() { return this.request("/workflow_templates"); }
  template(module, name) { return this.request(`/workflow_templates/${encodeURIComponent(module)}/${encodeURIComponent(`${name}.json`)}`); }

  modelFolders() { return this.request("/models"); }
  /** [{name, size, modified, pathIndex}] of a model folder. */
  modelFiles(folder) { return this.request(`/experiment/models/${encodeURIComponent(folder)}`); }
  modelMetadata(folder, filename) {
    return this.request(`/view_metadata/${encodeURIComponent(folder)}?filename=${encodeURIComponent(filename)}`);
  }

  /** A painted mask: the server puts its alpha into the original image and stores the result. */
  uploadMask(blob, { name, original, subfolder = "clipspace" }) {
    const form = new FormData();
    form.append("image", blob, name);
    form.append("type", "input");
    form.append("subfolder", subfolder);
    form.append("original_ref", JSON.stringify(original));
    return this.request("/upload/mask", { method: "POST", body: form });
  }

  settings() { return this.request("/settings"); }
  setSetting(id, value) { return this.request(`/settings/${encodeURIComponent(id)}`, { method: "POST", json: value }); }
}
