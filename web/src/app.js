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
import { MaskEditor } from "./mask_editor.js";
import { MODEL_DRAG_TYPE, ModelBrowser } from "./model_browser.js";
import { NODE_DRAG_TYPE, NodeLibrary } from "./node_library.js";
import { Settings } from "./settings.js";
import { Sidebar } from "./sidebar.js";
import { WorkflowTabs } from "./tabs.js";
import { WorkflowFiles } from "./workflows.js";

const $ = (selector) => document.querySelector(selector);

export class App {
  constructor({ Editor, MODE }) {
    this.MODE = MODE;
    this.api = new Api();
    this.socket = new Socket();
    this.editor = new Editor($("#graph"));
    this.defs = {};
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
      onLoadWorkflow: (w) => this.openWorkflow(w, { title: "From the history" }), onOpenImages: (urls, i) => openLightbox(urls, i),
    });
    this.maskEditor = new MaskEditor(this);
    this.settings = new Settings(this, $("#settings-dialog"));
    this.tabs = new WorkflowTabs(this, $("#tabs"));
    this.workflows = new WorkflowFiles(this, $("#panel-workflows"));
    this.library = new NodeLibrary(this, $("#panel-library"));
    this.models = new ModelBrowser(this, $("#panel-models"));
    this.sidebar = new Sidebar($("#sidebar"), {
      library: { title: "Node library", element: $("#panel-library"), render: () => this.library.render() },
      models: { title: "Models", element: $("#panel-models"), render: () => this.models.render() },
      workflows: { title: "Workflows", element: $("#panel-workflows"), render: () => this.workflows.render() },
    });
  }

  async init() {
    this.defs = await this.api.objectInfo();
    this.catalogue = catalogue(this.defs);
    registerDefinitions(this.editor, this.defs, this);
    await this.settings.load();
    this.#bindEditor();
    this.#bindSocket();
    this.#bindUi();
    installShortcuts(this);
    if (!this.tabs.restore()) {
      const response = await fetch("src/default_workflow.json");
      this.tabs.open(await response.json());
      this.editor.fitView();
    }
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

  /** The default graph in the active tab. */
  async loadDefault() {
    const response = await fetch("src/default_workflow.json");
    this.loadWorkflow(await response.json());
    this.editor.fitView();
  }

  newWorkflow() {
    this.tabs.newTab();
  }

  /** Put a workflow on the canvas (the active tab's content): used by the tabs. */
  loadIntoEditor(workflow, { keepView = false } = {}) {
    closeTextEditor();
    this.errors.clear();
    this.previews.clear();
    let missing;
    try {
      missing = this.editor.load(workflow, { keepView });
    } catch (error) {
      this.errors.showMessage(`This workflow could not be loaded: ${error.message}`);
      return false;
    }
    if (!workflow.extra?.ds) this.editor.fitView();
    for (const node of this.editor.nodes) {
      const upload = node.widgets?.find((w) => w.imageUpload);
      if (upload) this.previews.showInputImage(node, upload.value);
    }
    this.undo.reset();
    if (missing.length) {
      this.errors.showMessage(`These node types are not installed on the server: ${missing.join(", ")}. ` +
        "They are kept in the workflow (marked in red) but cannot run.", "Missing nodes");
    }
    return true;
  }

  /** Replace the active tab's workflow (`name`: the server file it is). */
  loadWorkflow(workflow, { name = null, quiet = false } = {}) {
    if (!this.tabs.current) return Boolean(this.tabs.open(workflow, { name }));
    if (!this.loadIntoEditor(workflow)) return false;
    this.tabs.current.title = null;
    this.tabs.markSaved(this.tabs.current, name);
    this.onActivated(this.tabs.current);
    if (!quiet && name) toast(`Loaded ${name}`);
    return true;
  }

  /** Open a workflow in a tab of its own (or the active one when that is empty). */
  openWorkflow(workflow, options = {}) {
    return this.tabs.open(workflow, options);
  }

  onActivated(tab) {
    document.title = tab ? `${this.tabs.title(tab)} — nodegraph` : "nodegraph";
  }

  async openFile(file) {
    try {
      const { workflow, source } = await workflowFromFile(file, this.defs);
      this.openWorkflow(workflow, { title: file.name.replace(/\.(json|png)$/i, "") });
      toast(`Loaded the ${source} of ${file.name}`);
    } catch (error) {
      toast(`Not opened: ${error instanceof FileError ? error.message : `${file.name}: ${error.message}`}`, { kind: "error", timeout: 8000 });
    }
  }

  /** Pasted text: a workflow (UI or API format) opens in a tab; anything else is refused. */
  openText(text) {
    try {
      const { workflow } = workflowFromJson(JSON.parse(text), this.defs, "the pasted text");
      this.openWorkflow(workflow, { title: "Pasted workflow" });
    } catch (error) {
      const why = error instanceof SyntaxError ? "it is not valid JSON" : error.message;
      toast(`Not pasted: ${why}`, { kind: "error", timeout: 8000 });
    }
  }

  saveToFile() {
    const name = (this.tabs.current?.name ?? `${this.tabs.title(this.tabs.current)}.json`).split("/").pop();
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
      this.tabs.changed();
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
      if (node.widgets?.some((w) => w.imageUpload)) {
        options.push({ content: "Open in mask editor", callback: () => this.maskEditor.open(node) });
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
    click("#btn-open", () => this.openFromDisk());
    click("#btn-save", () => this.saveWorkflow());
    click("#btn-download", () => this.saveToFile());
    click("#btn-export-api", () => this.exportApi());
    for (const button of document.querySelectorAll("[data-sidebar]")) {
      button.addEventListener("click", () => this.sidebar.toggle(button.dataset.sidebar));
    }
    click("#btn-refresh", () => this.refreshDefinitions());
    click("#btn-fit", () => this.editor.fitView());
    click("#btn-settings", () => (this.settings.dialog.hidden ? this.settings.open() : this.settings.close()));
    click("#settings-dialog .close", () => this.settings.close());
    installDropAndPaste(document.body, {
      nodeAt: (x, y) => this.editor.nodeAt(x, y),
      isImageNode: (node) => Boolean(node.widgets?.some((w) => w.imageUpload)),
      selectedImageNode: () => this.editor.selectedNodes().find((n) => n.widgets?.some((w) => w.imageUpload)) ?? null,
      onImageForNode: (file, node) => this.uploadInto(node, file),
      onWorkflowFile: (file) => this.openFile(file),
      onWorkflowText: (text) => this.openText(text),
      onPasteNodes: () => {
        this.undo.checkpoint();
        this.editor.paste({ keepInputLinks: Boolean(this.pasteKeepsLinks) });
        this.pasteKeepsLinks = false;
        this.undo.checkpoint();
      },
    });
    const canvas = $("#graph");
    canvas.addEventListener("dragover", (e) => {
      if ([NODE_DRAG_TYPE, MODEL_DRAG_TYPE].some((t) => e.dataTransfer?.types?.includes(t))) {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
      }
    });
    canvas.addEventListener("drop", (e) => {
      if (this.dropOnCanvas(e)) { e.preventDefault(); e.stopPropagation(); }
    });
  }

  // -- commands the shortcuts and menus share ---------------------------------------------------

  groupSelection() {
    const nodes = this.editor.selectedNodes();
    if (nodes.length) this.editor.addGroup("Group", nodes);
  }

  /** Save the active tab on the server (Ctrl+S); `as`: under a new name. The name, or null. */
  saveWorkflow({ as = false } = {}) {
    return this.workflows.save({ as });
  }

  async openFromDisk() {
    const file = await pickFile(".json,.png,application/json,image/png");
    if (file) await this.openFile(file);
  }

  closeDialogs() {
    this.search.close();
    this.settings.close();
    this.maskEditor.close();
    document.querySelector(".ng-lightbox")?.remove();
  }

  /** A node from the library or a model file from the model browser dropped on the canvas. */
  dropOnCanvas(event) {
    const pos = this.editor.toGraph([event.clientX, event.clientY]);
    const type = event.dataTransfer.getData(NODE_DRAG_TYPE);
    if (type) return Boolean(this.addNode(type, pos));
    const model = event.dataTransfer.getData(MODEL_DRAG_TYPE);
    if (!model) return false;
    const { folder, name } = JSON.parse(model);
    const loader = this.models.loaderFor(folder, name);
    if (!loader) {
      this.notify(`No loader node for ${folder} on this server.`, "warning");
      return true;
    }
    const node = this.addNode(loader[0], pos);
    const widget = node.widgets?.find((w) => w.name === loader[1]);
    if (widget) widget.value = name;
    this.editor.changed();
    return true;
  }
}
