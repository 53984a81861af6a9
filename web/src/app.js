// The editor application: wires the canvas (canvas.js) to the server (api.js, socket.js) and the
// panels. `window.nodegraph` is the App, for tests and the console.

import { Api } from "./api.js";
import { typesCompatible, workflowToPrompt, WorkflowError } from "./convert.js";
import { ErrorDisplay } from "./errors.js";
import { download, FileError, installDropAndPaste, pickFile, workflowFromFile, workflowFromJson } from "./files.js";
import { UndoHistory } from "./history.js";
import { catalogue, registerDefinitions } from "./nodes.js";
import { openLightbox, Previews } from "./previews.js";
import { QueuePanel } from "./queue_panel.js";
import { pushAllPrimitives, restoreFrontendNodes } from "./primitive.js";
import { NodeSearch, openCategoryMenu } from "./search.js";
import { installShortcuts } from "./shortcuts.js";
import { Socket } from "./socket.js";
import { SubgraphUi } from "./subgraphs.js";
import { toast } from "./toast.js";
import { applySeedControls, closeTextEditor } from "./widgets.js";
import { lastWorkflow, rememberWorkflow, WorkflowBrowser } from "./workflows.js";

const $ = (selector) => document.querySelector(selector);

export class App {
  constructor({ Editor, MODE }) {
    this.MODE = MODE;
    this.api = new Api();
    this.socket = new Socket();
    this.editor = new Editor($("#graph"));
    this.defs = {};
    this.workflowName = null;
    this.runningPromptId = null;
    this.runningNode = null;
    this.lastPromptId = null;
    this.events = []; // websocket messages of this session, newest last (for tests and debugging)
    this.errors = new ErrorDisplay(this.editor, $("#errors"));
    this.previews = new Previews(this.editor, this.api);
    this.undo = new UndoHistory(this.editor);
    this.subgraphUi = new SubgraphUi({ editor: this.editor, breadcrumb: $("#breadcrumb"), notify: (m, k) => this.notify(m, k) });
    this.search = new NodeSearch({ catalogue: () => this.catalogue, addNode: (t, p, l) => this.addNode(t, p, l) });
    this.queuePanel = new QueuePanel({
      api: this.api, counter: $("#queue-counter"), panel: $("#queue-panel"),
      onLoadWorkflow: (w) => this.loadWorkflow(w), onOpenImages: (urls, i) => openLightbox(urls, i),
    });
    this.workflows = new WorkflowBrowser({
      api: this.api, dialog: $("#workflows-dialog"),
      current: () => ({ workflow: this.editor.serialize(), name: this.workflowName }),
      onOpen: (w, name) => this.loadWorkflow(w, { name }),
      onSaved: (name) => this.setWorkflowName(name),
      notify: (m, kind) => toast(m, { kind }),
    });
  }

  async init() {
    this.defs = await this.api.objectInfo();
    this.catalogue = catalogue(this.defs);
    registerDefinitions(this.editor, this.defs, this);
    this.#bindEditor();
    this.#bindSocket();
    this.#bindUi();
    installShortcuts(this);
    const saved = lastWorkflow();
    if (saved) this.loadWorkflow(saved.workflow, { name: saved.name, quiet: true });
    else await this.loadDefault();
    this.socket.open();
    document.body.dataset.ready = "true";
  }

  /** The API prompt of a UI workflow, as queue() builds it (for tests and the console). */
  __convert(workflow) {
    return workflowToPrompt(workflow, this.defs);
  }

  // -- hooks used by widgets ---------------------------------------------------------------------

  changed() {
    this.editor.changed();
  }

  notify(message, kind = "info") {
    toast(message, { kind });
  }

  choicesOf(type, name) {
    const spec = this.defs[type]?.input?.required?.[name] ?? this.defs[type]?.input?.optional?.[name];
    if (!spec) return null;
    return Array.isArray(spec[0]) ? spec[0] : spec[0] === "COMBO" ? spec[1]?.options ?? [] : null;
  }

  showInputImage(node, value) {
    this.previews.showInputImage(node, value);
  }

  async pickImageFor(node, widget) {
    const file = await pickFile("image/png,image/jpeg,image/webp,image/gif");
    if (file) await this.uploadInto(node, file, widget);
  }

  async uploadInto(node, file, widget = node.widgets?.find((w) => w.imageUpload)) {
    try {
      const result = await this.api.uploadImage(file);
      const name = result.subfolder ? `${result.subfolder}/${result.name}` : result.name;
      await this.refreshDefinitions({ quiet: true });
      widget.value = name;
      this.previews.showInputImage(node, name);
      this.editor.changed();
      toast(`Uploaded ${name}`);
    } catch (error) {
      this.errors.showMessage(error.message, "Upload failed");
    }
  }

  // -- workflows ---------------------------------------------------------------------------------

  async loadDefault() {
    const response = await fetch("src/default_workflow.json");
    this.loadWorkflow(await response.json(), { name: null });
    this.editor.fitView();
  }

  newWorkflow() {
    this.loadWorkflow({ last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4 }, { name: null });
  }

  loadWorkflow(workflow, { name = null, quiet = false } = {}) {
    closeTextEditor();
    this.errors.clear();
    this.previews.clear();
    let missing;
    try {
      missing = this.editor.load(workflow);
    } catch (error) {
      this.errors.showMessage(`This workflow could not be loaded: ${error.message}`);
      return false;
    }
    if (!workflow.extra?.ds) this.editor.fitView();
    for (const node of this.editor.nodes) {
      const upload = node.widgets?.find((w) => w.imageUpload);
      if (upload) this.previews.showInputImage(node, upload.value);
    }
    this.setWorkflowName(name);
    this.undo.reset();
    rememberWorkflow(this.editor.serialize(), name);
    if (missing.length) {
      this.errors.showMessage(`These node types are not installed on the server: ${missing.join(", ")}. ` +
        "They are kept in the workflow but cannot run.", "Missing nodes");
    } else if (!quiet && name) {
      toast(`Loaded ${name}`);
    }
    return true;
  }

  setWorkflowName(name) {
    this.workflowName = name;
    $("#workflow-name").textContent = name ? name.replace(/\.json$/, "") : "Unsaved workflow";
  }

  async openFile(file) {
    try {
      const { workflow, source } = await workflowFromFile(file, this.defs);
      this.loadWorkflow(workflow, { name: null, quiet: true });
      toast(`Loaded the ${source} of ${file.name}`);
    } catch (error) {
      this.errors.showMessage(error instanceof FileError ? error.message : `${file.name}: ${error.message}`, "Cannot open file");
    }
  }

  loadJson(data) {
    const { workflow } = workflowFromJson(data, this.defs);
    return this.loadWorkflow(workflow, { quiet: true });
  }

  saveToFile() {
    const name = (this.workflowName ?? "workflow.json").split("/").pop();
    download(name.endsWith(".json") ? name : `${name}.json`, JSON.stringify(this.editor.serialize(), null, 2));
  }

  exportApi() {
    try {
      const prompt = workflowToPrompt(this.editor.serialize(), this.defs);
      download("workflow_api.json", JSON.stringify(prompt, null, 2));
    } catch (error) {
      this.errors.showMessage(error.message);
    }
  }

  async refreshDefinitions({ quiet = false } = {}) {
    this.defs = await this.api.objectInfo();
    this.catalogue = catalogue(this.defs);
    for (const type of Object.keys(this.defs)) {
      if (!this.editor.hasNodeType(type)) registerDefinitions(this.editor, { [type]: this.defs[type] }, this);
    }
    this.editor.setDirty();
    if (!quiet) toast("Node definitions and model lists refreshed");
  }

  // -- nodes -------------------------------------------------------------------------------------

  /** Add a node at a graph position; `link` connects it to the link being dragged. */
  addNode(type, graphPos, link = null) {
    const pos = graphPos ?? this.editor.toGraph([innerWidth / 2, innerHeight / 2]);
    const node = this.editor.createNode(type, pos);
    if (link) {
      if (link.kind === "output") {
        const slot = node.inputs.findIndex((i) => typesCompatible(link.type, i.type));
        if (slot >= 0) this.editor.connect(link.node, link.slot, node, slot);
      } else {
        const slot = node.outputs.findIndex((o) => typesCompatible(o.type, link.type));
        if (slot >= 0) this.editor.connect(node, slot, link.node, link.slot);
      }
    }
    this.editor.changed();
    return node;
  }

  openSearch(clientX, clientY, graphPos, link = null) {
    this.search.open({ clientX, clientY, graphPos, link });
  }

  // -- running -----------------------------------------------------------------------------------

  /** Build the API prompt from the graph and POST it; returns the prompt id or null. */
  async queue({ front = false } = {}) {
    closeTextEditor();
    pushAllPrimitives(this.editor.graphs());
    const workflow = this.editor.serialize();
    let prompt;
    try {
      prompt = workflowToPrompt(workflow, this.defs);
    } catch (error) {
      this.errors.showMessage(error instanceof WorkflowError ? error.message : String(error), "Cannot queue");
      return null;
    }
    this.errors.clear();
    try {
      const result = await this.api.queuePrompt(prompt, { clientId: this.socket.clientId, workflow, front });
      this.lastPromptId = result.prompt_id;
      if (Object.keys(result.node_errors ?? {}).length) this.errors.showValidation(result);
      applySeedControls(this.editor.graphs().flatMap((g) => g._nodes));
      this.editor.setDirty();
      this.editor.changed();
      return result.prompt_id;
    } catch (error) {
      if (error.body && typeof error.body === "object" && (error.body.node_errors || error.body.error)) {
        this.errors.showValidation(error.body);
      } else {
        this.errors.showMessage(error.message, "Cannot queue");
      }
      return null;
    }
  }

  async interrupt() {
    await this.api.interrupt(this.runningPromptId ?? undefined);
  }

  // -- wiring ------------------------------------------------------------------------------------

  #bindEditor() {
    const { editor } = this;
    editor.addEventListener("loaded", () => restoreFrontendNodes(editor.graphs(), this));
    editor.addEventListener("change", () => {
      this.undo.checkpoint();
      rememberWorkflow(editor.serialize(), this.workflowName);
    });
    editor.addEventListener("search-requested", ({ detail }) => {
      const e = detail.event;
      const graphPos = e?.canvasX !== undefined ? [e.canvasX, e.canvasY] : null;
      let link = null;
      const o = detail.options;
      if (o?.node_from) link = { kind: "output", node: o.node_from, slot: o.node_from.outputs.indexOf(o.slot_from), type: o.slot_from.type };
      else if (o?.node_to) link = { kind: "input", node: o.node_to, slot: o.node_to.inputs.indexOf(o.slot_to ?? o.slot_from), type: (o.slot_to ?? o.slot_from).type };
      this.openSearch(e?.clientX, e?.clientY, graphPos, link);
    });
    editor.addEventListener("connection-refused", ({ detail }) => toast(detail.reason, { kind: "error" }));
    editor.addEventListener("image-open", ({ detail }) => this.previews.open(detail.node.id));
    editor.addEventListener("node-menu", ({ detail }) => {
      const { node, options } = detail;
      if (this.editor.images.get(String(node.id))?.length) {
        options.push({ content: "Open image", callback: () => this.previews.open(node.id) });
      }
      options.push({ content: node.mode === this.MODE.BYPASS ? "Remove bypass" : "Bypass",
                     callback: () => this.editor.setMode([node], this.MODE.BYPASS) });
      options.push({ content: node.mode === this.MODE.NEVER ? "Unmute" : "Mute",
                     callback: () => this.editor.setMode([node], this.MODE.NEVER) });
    });
  }

  #bindSocket() {
    const { socket, editor } = this;
    const on = (type, handler) => socket.addEventListener(type, (e) => {
      this.events.push({ type, data: e.detail });
      if (this.events.length > 500) this.events.splice(0, 100);
      handler(e.detail);
    });
    on("connected", () => { $("#connection").dataset.state = "connected"; $("#connection").title = "Connected to the server"; });
    on("disconnected", () => { $("#connection").dataset.state = "disconnected"; $("#connection").title = "Reconnecting…"; });
    on("status", (d) => this.queuePanel.setRemaining(d.status?.exec_info?.queue_remaining ?? 0));
    on("execution_start", (d) => {
      this.runningPromptId = d.prompt_id;
      editor.clearStates("running", "progress", "cached");
      this.#setProgress(null);
    });
    on("execution_cached", (d) => { for (const id of d.nodes ?? []) editor.setState(id, { cached: true }); });
    on("executing", (d) => {
      if (this.runningNode !== null) editor.setState(this.runningNode, { running: false, progress: undefined });
      this.runningNode = d.node ?? null;
      if (d.node === null || d.node === undefined) {
        this.runningPromptId = null;
        editor.clearStates("running", "progress");
        this.#setProgress(null);
      } else {
        editor.setState(d.display_node ?? d.node, { running: true });
      }
    });
    on("progress", (d) => {
      editor.setState(d.node, { progress: d.max ? d.value / d.max : 0 });
      this.#setProgress(d.max ? d.value / d.max : 0);
    });
    on("executed", (d) => this.previews.showOutput(d.display_node ?? d.node, d.output));
    on("execution_error", (d) => {
      this.errors.showRuntime(d);
      this.runningPromptId = null;
      editor.clearStates("running", "progress");
    });
    on("execution_interrupted", () => {
      toast("Interrupted", { kind: "warning" });
      editor.clearStates("running", "progress");
      this.runningPromptId = null;
      this.#setProgress(null);
    });
    on("execution_success", () => { editor.clearStates("running", "progress"); this.#setProgress(null); });
    on("preview", (d) => this.previews.showLive(d.meta?.display_node_id ?? d.meta?.node_id ?? this.runningNode, d.blob));
  }

  #setProgress(fraction) {
    const bar = $("#progress");
    bar.hidden = fraction === null;
    bar.querySelector(".bar").style.width = `${Math.round((fraction ?? 0) * 100)}%`;
  }

  #bindUi() {
    const click = (selector, handler) => $(selector).addEventListener("click", handler);
    click("#btn-queue", () => this.queue());
    click("#btn-interrupt", () => this.interrupt());
    click("#queue-counter", () => this.queuePanel.toggle());
    click("#btn-queue-panel", () => this.queuePanel.toggle());
    click("#btn-add", (e) => {
      const r = e.currentTarget.getBoundingClientRect();
      openCategoryMenu(this.catalogue, { clientX: r.left, clientY: r.bottom + 2, onChoose: (t) => this.addNode(t, null) });
    });
    click("#btn-search", () => this.openSearch(innerWidth / 2 - 200, 120, null));
    click("#btn-new", () => this.newWorkflow());
    click("#btn-default", () => this.loadDefault());
    click("#btn-open", () => this.openFromDisk());
    click("#btn-save", () => this.saveToFile());
    click("#btn-export-api", () => this.exportApi());
    click("#btn-workflows", () => this.workflows.open());
    click("#workflows-dialog .close", () => this.workflows.close());
    click("#btn-refresh", () => this.refreshDefinitions());
    click("#btn-fit", () => this.editor.fitView());
    installDropAndPaste(document.body, {
      nodeAt: (x, y) => this.editor.nodeAt(x, y),
      isImageNode: (node) => Boolean(node.widgets?.some((w) => w.imageUpload)),
      selectedImageNode: () => this.editor.selectedNodes().find((n) => n.widgets?.some((w) => w.imageUpload)) ?? null,
      onImageForNode: (file, node) => this.uploadInto(node, file),
      onWorkflowFile: (file) => this.openFile(file),
    });
  }

  // -- commands the shortcuts and menus share ---------------------------------------------------

  groupSelection() {
    const nodes = this.editor.selectedNodes();
    if (nodes.length) this.editor.addGroup("Group", nodes);
  }

  saveWorkflow() {
    this.saveToFile();
  }

  async openFromDisk() {
    const file = await pickFile(".json,.png,application/json,image/png");
    if (file) await this.openFile(file);
  }

  closeDialogs() {
    this.search.close();
    this.workflows.close();
    document.querySelector(".ng-lightbox")?.remove();
  }
}
