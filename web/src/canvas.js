// The canvas: the one module that knows the graph library (@comfyorg/litegraph 0.17.2, MIT).
// Everything else talks to an Editor: register node types, load/serialize UI workflows, find
// nodes, convert between graph and screen coordinates, and paint run state (running, progress,
// cached, errors, images) on nodes. Swapping the library means rewriting this file only.
//
// Nodes handed out are the library's node objects; the rest of the app relies only on:
// id, type, title, mode, pos, size, widgets[{name, value, options}], inputs[{name, type, link}],
// outputs[{name, type, links}].

import {
  LiteGraph, LGraph, LGraphCanvas, LGraphNode, LGraphGroup,
} from "../node_modules/@comfyorg/litegraph/dist/litegraph.es.js";

import { copySelection, duplicateSelection, pasteClipboard, removeGroup, renameGroup, renameNode } from "./canvas_edit.js";
import { installPainting } from "./canvas_paint.js";
import { Subgraphs } from "./canvas_subgraphs.js";
import { compressWidgetSockets } from "./widget_inputs.js";

/** LiteGraph's node and widget colours per theme (dark: the library's own). */
const THEMES = {
  dark: {
    NODE_TITLE_COLOR: "#999", NODE_SELECTED_TITLE_COLOR: "#FFF", NODE_TEXT_COLOR: "#AAA", NODE_DEFAULT_COLOR: "#333",
    NODE_DEFAULT_BGCOLOR: "#353535", NODE_DEFAULT_BOXCOLOR: "#666", WIDGET_BGCOLOR: "#222", WIDGET_OUTLINE_COLOR: "#666",
    WIDGET_TEXT_COLOR: "#DDD", WIDGET_SECONDARY_TEXT_COLOR: "#999", LINK_COLOR: "#9A9",
  },
  light: {
    NODE_TITLE_COLOR: "#222", NODE_SELECTED_TITLE_COLOR: "#000", NODE_TEXT_COLOR: "#333", NODE_DEFAULT_COLOR: "#c9ccd1",
    NODE_DEFAULT_BGCOLOR: "#f4f5f7", NODE_DEFAULT_BOXCOLOR: "#888", WIDGET_BGCOLOR: "#ffffff", WIDGET_OUTLINE_COLOR: "#9aa0a6",
    WIDGET_TEXT_COLOR: "#222", WIDGET_SECONDARY_TEXT_COLOR: "#555", LINK_COLOR: "#5a8",
  },
};

export const MODE = Object.freeze({ ALWAYS: 0, NEVER: 2, BYPASS: 4 });


export class Editor extends EventTarget {
  constructor(element) {
    super();
    LiteGraph.release_link_on_empty_shows_menu = true;
    LiteGraph.alt_drag_do_clone_nodes = true;
    LiteGraph.middle_click_slot_add_default_node = true;
    LiteGraph.snaps_for_comfy = true;
    LiteGraph.catch_exceptions = true;
    this.element = element;
    this.graph = new LGraph();
    this.canvas = new LGraphCanvas(element, this.graph, { skip_render: false });
    this.canvas.allow_searchbox = true;
    this.canvas.allow_reconnect_links = true; // drag a link off an input to move or remove it
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    this.defaultBackground = this.canvas.background_image;
    this.canvas.showSearchBox = (event, options) => {
      this.emit("search-requested", { event, options: options ?? null });
      return null;
    };
    /** Run state painted on nodes, by node id (string). */
    this.states = new Map();
    this.images = new Map(); // node id -> [HTMLImageElement]
    this.nodeTypes = new Map();
    this.#extendMenus();
    const editor = this;
    LGraphNode.prototype.onNodeTitleDblClick = function (event) { renameNode(editor, this, event); };
    element.addEventListener("litegraph:canvas", (e) => {
      if (e.detail?.subType === "group-double-click") renameGroup(this, e.detail.group, e.detail.originalEvent);
    });
    this.#watchConnections();
    this.#watchChanges();
    installPainting(this);
    this.subgraphs = new Subgraphs(this);
    this.resize();
    new ResizeObserver(() => this.resize()).observe(element.parentElement ?? element);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -- node types -------------------------------------------------------------------------------

  /**
   * Register a node type. `spec`: {title, category, description, inputs: [{name, type, tooltip}],
   * outputs: [{name, type, tooltip}], outputNode, virtual, color, build(node, editor)} — `build`
   * adds the widgets (see widgets.js).
   */
  registerNodeType(type, spec) {
    const editor = this;
    class Node extends LGraphNode {
      constructor(title) {
        super(title ?? spec.title);
        this.serialize_widgets = true;
        this.isVirtualNode = Boolean(spec.virtual);
        for (const input of spec.inputs ?? []) {
          const slot = this.addInput(input.name, input.type);
          if (input.tooltip) slot.tooltip = input.tooltip;
          if (input.label) slot.label = input.label;
        }
        for (const output of spec.outputs ?? []) {
          const slot = this.addOutput(output.name, output.type);
          if (output.tooltip) slot.tooltip = output.tooltip;
        }
        spec.build?.(this, editor);
        const [w, h] = this.computeSize();
        this.size = [Math.max(w, spec.minWidth ?? 0), h];
        if (spec.color) this.color = spec.color;
        if (spec.bgcolor) this.bgcolor = spec.bgcolor;
      }
      onDblClick(event, pos) {
        if (editor.images.get(editor.stateKey(this))?.length && pos[1] > editor.imageTop(this)) {
          editor.emit("image-open", { node: this });
        }
      }
    }
    for (const [name, method] of Object.entries(spec.methods ?? {})) Node.prototype[name] = method;
    Node.title = spec.title;
    Node.category = spec.category ?? "";
    Node.description = spec.description ?? "";
    Node.nodeData = spec;
    if (spec.size) Node.size = spec.size;
    LiteGraph.registerNodeType(type, Node);
    this.nodeTypes.set(type, spec);
  }

  /** Link and slot colours by type name. */
  setTypeColors(colors) {
    Object.assign(LGraphCanvas.link_type_colors, colors);
    this.canvas.default_connection_color_byType = { ...colors };
    this.setDirty();
  }

  hasNodeType(type) {
    return this.nodeTypes.has(type);
  }

  // -- widgets ----------------------------------------------------------------------------------

  /** A built-in widget: kind is "number", "combo", "text", "toggle" or "button". */
  addWidget(node, kind, name, value, onChange, options = {}) {
    const widget = node.addWidget(kind, name, value, (v) => onChange?.(v, widget), options);
    return widget;
  }

  /** A widget we draw ourselves, in LiteGraph's widget protocol: {name, type, value, options,
   * draw(ctx, node, width, y, height), mouse(event, [x, y], node), computeLayoutSize(node)}. */
  addCustomWidget(node, widget) {
    return node.addCustomWidget(widget);
  }

  /** The canvas-space rectangle of a widget: [x, y, width, height]. */
  widgetRect(node, widget) {
    const height = widget.computedHeight ? widget.computedHeight - 4 : LiteGraph.NODE_WIDGET_HEIGHT;
    return [node.pos[0] + 15, node.pos[1] + (widget.last_y ?? widget.y ?? 0), node.size[0] - 30, height];
  }

  /** Ask the library to show its small value prompt (used for single-line text). */
  prompt(title, value, callback, event) {
    this.canvas.prompt(title, value, callback, event);
  }

  // -- the graph ---------------------------------------------------------------------------------

  /** The graph on screen: the root workflow or an opened subgraph. */
  get current() {
    return this.canvas.graph ?? this.graph;
  }

  /** The nodes of the graph on screen. */
  get nodes() {
    return this.current._nodes;
  }

  /** The key of a node's run state and images: its id in the prompt ("10:5" inside subgraph 10). */
  stateKey(node) {
    return `${node.graph && node.graph !== this.graph ? this.subgraphs.prefix : ""}${node.id}`;
  }

  /** The root graph and every subgraph definition. */
  graphs() {
    return [this.graph, ...this.graph.subgraphs.values()];
  }

  nodeById(id) {
    const graph = this.current;
    return graph.getNodeById(Number.isNaN(Number(id)) ? id : Number(id)) ?? graph.getNodeById(id);
  }

  /** The node under a page (client) position, or null. */
  nodeAt(clientX, clientY) {
    const [x, y] = this.toGraph([clientX, clientY]);
    return this.current.getNodeOnPos(x, y) ?? null;
  }

  createNode(type, pos = null, { select = true } = {}) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error(`unknown node type ${type}`);
    if (pos) node.pos = [pos[0], pos[1]];
    const graph = this.current;
    graph.beforeChange();
    graph.add(node);
    graph.afterChange();
    if (select) this.canvas.selectNode(node);
    this.changed();
    return node;
  }

  removeNode(node) {
    node.graph.remove(node);
    this.changed();
  }

  connect(fromNode, outputSlot, toNode, inputSlot) {
    return fromNode.connect(outputSlot, toNode, inputSlot);
  }

  /** The links as [id, originId, originSlot, targetId, targetSlot, type]. */
  links() {
    return [...this.current._links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]);
  }

  /** The graph as a ComfyUI UI workflow (LiteGraph schema 0.4), subgraphs in
   * `definitions.subgraphs`; widget sockets compressed as ComfyUI saves them. */
  serialize() {
    const data = JSON.parse(JSON.stringify(this.graph.serialize()));
    data.extra = { ...(data.extra ?? {}), ds: { scale: this.canvas.ds.scale, offset: [...this.canvas.ds.offset] } };
    compressWidgetSockets(data, (id) => this.graph.getNodeById(id));
    for (const definition of data.definitions?.subgraphs ?? []) {
      const subgraph = this.graph.subgraphs.get(definition.id);
      if (subgraph) compressWidgetSockets(definition, (id) => subgraph.getNodeById(id));
    }
    return data;
  }

  /** Load a UI workflow. Returns the node types it uses that are not registered. */
  load(workflow, { keepView = false } = {}) {
    const missing = [...new Set((workflow.nodes ?? []).map((n) => n.type).filter((t) => !this.hasNodeType(t)))];
    this.states.clear();
    this.images.clear();
    this.loading = true;
    try {
      if (!keepView) this.subgraphs.reset();
      this.graph.clear();
      this.graph.configure(structuredClone(workflow));
    } finally {
      this.loading = false;
    }
    if (keepView) this.subgraphs.revalidate();
    this.emit("loaded", {});
    const ds = workflow.extra?.ds;
    if (!keepView && ds?.offset && ds.scale) {
      this.canvas.ds.scale = ds.scale;
      this.canvas.ds.offset = [ds.offset[0], ds.offset[1]];
    }
    this.canvas.setDirty(true, true);
    return missing;
  }

  clear() {
    this.states.clear();
    this.images.clear();
    this.subgraphs.reset();
    this.graph.clear();
    this.canvas.setDirty(true, true);
  }

  setMode(nodes, mode) {
    for (const node of nodes) node.mode = node.mode === mode ? MODE.ALWAYS : mode;
    this.changed();
  }

  toggleCollapsed(nodes = this.selectedNodes()) {
    for (const node of nodes) node.collapse(true);
    this.changed();
  }

  togglePinned(nodes = this.selectedNodes()) {
    const pin = !nodes.every((n) => n.pinned);
    for (const node of nodes) node.pin(pin);
    this.changed();
  }

  selectedNodes() {
    return Object.values(this.canvas.selected_nodes ?? {});
  }

  addGroup(title, nodes) {
    const group = new LGraphGroup(title);
    this.current.add(group);
    if (nodes?.length) group.resizeTo(nodes, 10);
    this.changed();
    return group;
  }

  // -- the view ----------------------------------------------------------------------------------

  resize() {
    const el = this.element;
    const ratio = Math.max(window.devicePixelRatio, 1);
    const { width, height } = el.getBoundingClientRect();
    if (!width || !height) return;
    el.width = Math.round(width * ratio);
    el.height = Math.round(height * ratio);
    el.getContext("2d").scale(ratio, ratio);
    this.canvas.setDirty(true, true);
    this.canvas.draw(true, true);
  }

  /** Graph coordinates → page (client) coordinates. */
  toClient([x, y]) {
    const rect = this.element.getBoundingClientRect();
    const { scale, offset } = this.canvas.ds;
    return [rect.left + (x + offset[0]) * scale, rect.top + (y + offset[1]) * scale];
  }

  /** Page (client) coordinates → graph coordinates. */
  toGraph([clientX, clientY]) {
    const rect = this.element.getBoundingClientRect();
    const { scale, offset } = this.canvas.ds;
    return [(clientX - rect.left) / scale - offset[0], (clientY - rect.top) / scale - offset[1]];
  }

  /** Client coordinates of a node's input or output slot centre. */
  slotClient(node, kind, index) {
    const pos = kind === "input" ? node.getInputPos(index) : node.getOutputPos(index);
    return this.toClient(pos);
  }

  get view() {
    return { scale: this.canvas.ds.scale, offset: [...this.canvas.ds.offset] };
  }

  setView({ scale, offset }) {
    if (scale) this.canvas.ds.scale = scale;
    if (offset) this.canvas.ds.offset = [offset[0], offset[1]];
    this.canvas.setDirty(true, true);
  }

  centerOn(node) {
    this.canvas.centerOnNode(node);
    this.canvas.selectNode(node);
  }

  /** Zoom and pan so every node is visible. */
  fitView() {
    if (!this.nodes.length) return;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of this.nodes) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const rect = this.element.getBoundingClientRect();
    const margin = 40;
    const scale = Math.min(1.25, Math.max(0.1, Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0))));
    this.canvas.ds.scale = scale;
    this.canvas.ds.offset = [(rect.width / scale - (x1 - x0)) / 2 - x0, (rect.height / scale - (y1 - y0)) / 2 - y0];
    this.canvas.setDirty(true, true);
  }

  setDirty() {
    this.canvas.setDirty(true, true);
  }

  // -- settings -------------------------------------------------------------------------------------

  setTheme(theme) {
    Object.assign(LiteGraph, THEMES[theme] ?? THEMES.dark);
    this.canvas.clear_background_color = theme === "light" ? "#e8e8e8" : "#222";
    this.canvas.background_image = theme === "light" ? null : this.defaultBackground;
    this.canvas.node_title_color = LiteGraph.NODE_TITLE_COLOR;
    this.setDirty();
  }

  /** 0 straight, 1 linear (angled), 2 spline: LiteGraph's link render types. */
  setLinkRenderMode(mode) {
    this.canvas.links_render_mode = [0, 1, 2].includes(mode) ? mode : 2;
    this.setDirty();
  }

  setSnapToGrid(on, size = 10) {
    LiteGraph.alwaysSnapToGrid = on;
    LiteGraph.CANVAS_GRID_SIZE = size;
  }

  /** Draw one frame now (the benchmark measures this). */
  drawNow() {
    this.canvas.draw(true, true);
  }

  // -- run state on nodes ------------------------------------------------------------------------

  /** Merge `patch` into a node's state: {running, progress (0..1), cached, error: {messages, inputs}}. */
  setState(id, patch) {
    const key = String(id);
    const next = { ...(this.states.get(key) ?? {}), ...patch };
    for (const [k, v] of Object.entries(next)) if (v === undefined || v === null || v === false) delete next[k];
    if (Object.keys(next).length) this.states.set(key, next);
    else this.states.delete(key);
    this.setDirty();
  }

  /** Remove one kind of state (e.g. "error", "cached") from every node. */
  clearStates(...kinds) {
    for (const [key, state] of this.states) {
      for (const kind of kinds) delete state[kind];
      if (!Object.keys(state).length) this.states.delete(key);
    }
    this.setDirty();
  }

  stateOf(id) {
    return this.states.get(String(id)) ?? {};
  }

  /** Show images (HTMLImageElements) in a node, growing it so they fit. */
  setImages(id, images) {
    const key = String(id);
    if (!images?.length) { this.images.delete(key); this.setDirty(); return; }
    this.images.set(key, images);
    const node = this.nodeById(id);
    if (node) {
      const top = this.imageTop(node);
      if (node.size[1] < top + 220) node.setSize([Math.max(node.size[0], 256), top + 220]);
    }
    this.setDirty();
  }

  /** Y (relative to the node) below which images are drawn: under the last widget or slot. */
  imageTop(node) {
    let top = Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0) * LiteGraph.NODE_SLOT_HEIGHT + 8;
    for (const w of node.widgets ?? []) {
      const h = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT + 4;
      top = Math.max(top, (w.last_y ?? w.y ?? 0) + h);
    }
    return top;
  }

  // -- menus --------------------------------------------------------------------------------------

  /** The app adds entries to the library's right-click menus: "node-menu" {node, options} (any
   * node, subgraph instances included) and "canvas-menu" {options}, put first. */
  #extendMenus() {
    const { canvas } = this;
    const nodeMenu = canvas.getNodeMenuOptions.bind(canvas);
    canvas.getNodeMenuOptions = (node) => {
      const extra = [];
      this.emit("node-menu", { node, options: extra });
      const own = nodeMenu(node).filter((o) => !o?.content?.startsWith("Convert to Subgraph")); // ours is in `extra`
      return [...extra, ...(extra.length ? [null] : []), ...own];
    };
    const canvasMenu = canvas.getCanvasMenuOptions.bind(canvas);
    canvas.getCanvasMenuOptions = () => {
      const extra = [];
      const group = this.current.getGroupOnPos(canvas.graph_mouse[0], canvas.graph_mouse[1]);
      if (group) {
        extra.push({ content: "Rename group", callback: (v, o, e) => renameGroup(this, group, e) },
          { content: "Remove group (keep its nodes)", callback: () => removeGroup(this, group) });
      }
      this.emit("canvas-menu", { options: extra, group });
      const own = canvasMenu().filter((o) => !o?.content?.startsWith("Convert to Subgraph"));
      return [...extra, ...(extra.length ? [null] : []), ...own];
    };
  }

  // -- connections -------------------------------------------------------------------------------

  #watchConnections() {
    const connector = this.canvas.linkConnector;
    let created = false;
    connector.events.addEventListener("link-created", () => { created = true; });
    // A link dropped on a widget whose socket takes another type is refused (not connected to the
    // node's first input of the link's type instead).
    const refusingWidget = (node, event) => {
      const widget = node.getWidgetOnPos?.(event.canvasX, event.canvasY, true);
      const socket = widget && node.inputs?.find((i) => i.widget?.name === widget.name);
      const fromType = connector.renderLinks[0]?.fromSlot?.type ?? "*";
      return socket && !LiteGraph.isValidConnection(fromType, socket.type) ? socket : null;
    };
    const dropOnNode = connector.dropOnNode.bind(connector);
    connector.dropOnNode = (node, event) => {
      if (connector.state.connectingTo === "input" && refusingWidget(node, event)) return;
      dropOnNode(node, event);
    };
    connector.events.addEventListener("after-drop-links", (e) => {
      const { renderLinks, event } = e.detail;
      const wasCreated = created;
      created = false;
      if (wasCreated || !renderLinks?.length) return;
      const from = renderLinks[0];
      const connectingTo = connector.state.connectingTo;
      const node = this.current.getNodeOnPos(event.canvasX, event.canvasY);
      if (!node || node === from.node) return;
      const fromType = from.fromSlot?.type ?? "*";
      let reason = null;
      if (connectingTo === "input") {
        const input = node.getInputOnPos([event.canvasX, event.canvasY]) ?? refusingWidget(node, event);
        if (input && !LiteGraph.isValidConnection(fromType, input.type)) {
          reason = `Cannot connect ${fromType} to input “${input.name}” of ${node.title}: it takes ${input.type}.`;
        } else if (!input && !(node.inputs ?? []).some((i) => LiteGraph.isValidConnection(fromType, i.type))) {
          reason = `${node.title} has no input that takes ${fromType}.`;
        }
      } else if (connectingTo === "output") {
        const output = node.getOutputOnPos([event.canvasX, event.canvasY]);
        if (output && !LiteGraph.isValidConnection(output.type, fromType)) {
          reason = `Cannot connect output “${output.name}” (${output.type}) of ${node.title} to an input that takes ${fromType}.`;
        }
      }
      if (reason) this.emit("connection-refused", { reason, node });
    });
  }

  // -- changes -----------------------------------------------------------------------------------

  /** Tell listeners the graph changed (undo checkpoints, autosave). Debounced. */
  changed() {
    clearTimeout(this._changeTimer);
    this._changeTimer = setTimeout(() => this.emit("change", {}), 150);
  }

  #watchChanges() {
    const el = this.element;
    el.addEventListener("pointerup", () => this.changed());
    el.addEventListener("keyup", () => this.changed());
    // The library's menus and value prompts live outside the canvas element: a choice or a typed
    // value there is an edit too.
    document.addEventListener("pointerup", (e) => { if (e.target.closest?.(".litecontextmenu, .graphdialog")) this.changed(); });
    document.addEventListener("keyup", (e) => { if (e.target.closest?.(".graphdialog")) this.changed(); });
    this.graph.onAfterChange = () => this.changed();
    this.graph.onNodeAdded = (node) => this.emit("node-added", { node });
    this.graph.onNodeRemoved = (node) => {
      this.states.delete(String(node.id));
      this.images.delete(String(node.id));
      this.emit("node-removed", { node });
    };
  }

  // -- editing commands (canvas_edit.js) -----------------------------------------------------------

  copy() { copySelection(this); }
  paste({ keepInputLinks = false } = {}) { pasteClipboard(this, keepInputLinks); this.changed(); }
  duplicate() { duplicateSelection(this); this.changed(); }
  deleteSelected() { this.canvas.deleteSelected(); this.changed(); }
  selectAll() { this.canvas.selectItems(); this.setDirty(); }
}

/** Text width in the canvas font, for sizing widgets. */
export function measureText(text, font = "12px sans-serif") {
  const ctx = measureText.ctx ??= document.createElement("canvas").getContext("2d");
  ctx.font = font;
  return ctx.measureText(text).width;
}

export const WIDGET_HEIGHT = LiteGraph.NODE_WIDGET_HEIGHT;
export const TITLE_HEIGHT = LiteGraph.NODE_TITLE_HEIGHT;
