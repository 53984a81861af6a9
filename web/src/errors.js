// Validation errors (POST /prompt answered 400) and runtime errors (execution_error) shown on the
// offending node and input, and listed in a panel whose entries jump to the node. The graph is
// never touched: errors go when the next queue starts.

export class ErrorDisplay {
  constructor(editor, panel) {
    this.editor = editor;
    this.panel = panel;
    this.errors = []; // [{nodeId, title, input, message}]
  }

  clear() {
    this.errors = [];
    this.editor.clearStates("error");
    this.render();
  }

  /** A 400 answer of POST /prompt: {error: {type, message, details}, node_errors: {...}}. */
  showValidation(body) {
    const nodeErrors = body?.node_errors ?? {};
    const entries = [];
    for (const [nodeId, info] of Object.entries(nodeErrors)) {
      const inputs = {};
      const messages = [];
      for (const error of info.errors ?? []) {
        const input = error.extra_info?.input_name;
        const text = error.details ? `${error.message}: ${error.details}` : error.message;
        messages.push(input ? `${input}: ${text}` : text);
        if (input) inputs[input] = text;
        entries.push({ nodeId, title: this.#title(nodeId, info.class_type), input, message: text });
      }
      this.editor.setState(nodeId, { error: { messages, inputs } });
    }
    if (!entries.length) {
      const error = body?.error ?? {};
      entries.push({ nodeId: null, title: "Prompt", input: null,
                     message: [error.message ?? "The server refused the prompt", error.details].filter(Boolean).join(": ") });
    }
    this.errors = entries;
    this.render(body?.error?.message ?? "The workflow has errors");
  }

  /** The websocket's execution_error. */
  showRuntime(data) {
    const text = `${data.exception_type}: ${data.exception_message}`.trim();
    this.editor.setState(data.node_id, { error: { messages: [text], inputs: {} }, running: false, progress: undefined });
    this.errors = [{ nodeId: String(data.node_id), title: this.#title(data.node_id, data.node_type), input: null,
                     message: text, traceback: data.traceback }];
    this.render("Error while running the workflow");
  }

  /** A message without a node (a malformed file, an unreachable server). */
  showMessage(message, heading = "Error") {
    this.errors = [{ nodeId: null, title: heading, input: null, message }];
    this.render(heading);
  }

  #title(nodeId, classType) {
    const node = this.editor.nodeById(nodeId);
    return `#${nodeId} ${node?.title ?? classType ?? ""}`.trim();
  }

  render(heading = "") {
    const panel = this.panel;
    panel.replaceChildren();
    panel.hidden = !this.errors.length;
    if (!this.errors.length) return;
    const head = document.createElement("div");
    head.className = "head";
    head.innerHTML = `<strong></strong><button type="button" class="close" title="Dismiss">×</button>`;
    head.querySelector("strong").textContent = heading;
    head.querySelector("button").addEventListener("click", () => { panel.hidden = true; });
    panel.append(head);
    for (const error of this.errors) {
      const item = document.createElement("div");
      item.className = "ng-error-item";
      if (error.nodeId !== null) item.dataset.node = error.nodeId;
      const title = document.createElement("div");
      title.className = "node";
      title.textContent = error.input ? `${error.title} · ${error.input}` : error.title;
      const message = document.createElement("div");
      message.className = "message";
      message.textContent = error.message;
      item.append(title, message);
      if (error.traceback?.length) {
        const details = document.createElement("details");
        details.innerHTML = "<summary>Traceback</summary><pre></pre>";
        details.querySelector("pre").textContent = error.traceback.join("");
        item.append(details);
      }
      if (error.nodeId !== null) {
        item.addEventListener("click", () => {
          const node = this.editor.nodeById(error.nodeId);
          if (node) this.editor.centerOn(node);
        });
      }
      panel.append(item);
    }
  }
}
