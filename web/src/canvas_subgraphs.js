// Subgraphs on the canvas, on the library's own Subgraph / SubgraphNode (litegraph 0.17): a node
// type per definition, convert a selection into an instance, open one (double-click or its title
// button) and go back up (the path kept for the breadcrumb and for run state ids "10:5"), and
// unpack an instance back into its nodes, which this version of the library lacks.

import { LGraphGroup, LiteGraph, SubgraphNode } from "../node_modules/@comfyorg/litegraph/dist/litegraph.es.js";
import { targetWidget } from "./widget_inputs.js";

const INPUT_NODE = -10;
const OUTPUT_NODE = -20;

export class Subgraphs {
  constructor(editor) {
    this.editor = editor;
    /** The instances opened from the root down to the graph on screen. */
    this.path = [];
    editor.graph.events.addEventListener("subgraph-created", (e) => this.#register(e.detail.subgraph));
    // The library opens a subgraph on a double-click or the title button: note which instance.
    const canvas = editor.canvas;
    const open = canvas.openSubgraph.bind(canvas);
    canvas.openSubgraph = (subgraph) => {
      const here = canvas.graph?._nodes ?? [];
      const instance = here.find((n) => n.subgraph === subgraph && n.selected) ?? here.find((n) => n.subgraph === subgraph);
      open(subgraph);
      this.path.push(instance ?? { id: "?", subgraph, title: subgraph.name });
      this.#entered();
    };
  }

  /** Every graph on screen is a root or an opened instance's subgraph: "10:3:" for node ids. */
  get prefix() {
    return this.path.map((n) => `${n.id}:`).join("");
  }

  #register(subgraph) {
    const editor = this.editor;
    class SubgraphInstance extends SubgraphNode {
      constructor() {
        super(editor.graph, subgraph, {
          id: -1, type: subgraph.id, title: subgraph.name, pos: [0, 0], size: [200, 80], flags: {}, order: 0, mode: 0,
          inputs: [], outputs: [], properties: {},
        });
        this.serialize_widgets = true; // promoted widgets' values, as ComfyUI saves them
      }

      // Values of widgets promoted from inner nodes of a type this server lacks stay as saved.
      serialize() {
        const data = super.serialize();
        if (!this.widgets?.length && Array.isArray(this.widgets_values) && this.widgets_values.length) {
          data.widgets_values = structuredClone(this.widgets_values);
        }
        return data;
      }
    }
    SubgraphInstance.title = subgraph.name;
    LiteGraph.registerNodeType(subgraph.id, SubgraphInstance);
    subgraph.onAfterChange = () => editor.changed();
  }

  /** Turn the selected nodes (and groups) of the graph on screen into one subgraph instance. */
  convertSelection() {
    const { canvas } = this.editor;
    const items = new Set(canvas.selectedItems);
    if (![...items].some((i) => i.id !== undefined && i.type !== undefined)) return null;
    const graph = canvas.graph;
    graph.beforeChange();
    const { node } = graph.convertToSubgraph(items);
    graph.afterChange();
    canvas.deselectAll();
    canvas.select(node);
    this.editor.changed();
    return node;
  }

  open(node) {
    if (node?.subgraph) this.editor.canvas.openSubgraph(node.subgraph);
  }

  /** Go back up to `level` (0 = the root workflow). */
  up(level = this.path.length - 1) {
    if (level < 0 || level >= this.path.length) return;
    const { canvas } = this.editor;
    this.path.length = level;
    const graph = level ? this.path[level - 1].subgraph : this.editor.graph;
    canvas.subgraph = level ? graph : undefined;
    canvas.setGraph(graph);
    this.#entered();
  }

  /** Back to the root, e.g. before loading another workflow. */
  reset() {
    this.path.length = 0;
    const { canvas } = this.editor;
    canvas.subgraph = undefined;
    if (canvas.graph !== this.editor.graph) canvas.setGraph(this.editor.graph);
  }

  /** After an undo: the graph on screen may have been replaced. Keep the path if it still exists. */
  revalidate() {
    const { canvas } = this.editor;
    let graph = this.editor.graph;
    const path = [];
    for (const node of this.path) {
      const again = graph.getNodeById(node.id);
      if (!again?.subgraph) break;
      path.push(again);
      graph = again.subgraph;
    }
    this.path = path;
    canvas.subgraph = path.length ? graph : undefined;
    if (canvas.graph !== graph) canvas.setGraph(graph);
    this.editor.emit("graph-changed", { path: this.path });
  }

  #entered() {
    this.editor.fitView();
    this.editor.emit("graph-changed", { path: this.path });
  }

  /** Replace an instance by its inner nodes, wired as the instance was. */
  unpack(node) {
    const graph = node.graph;
    const data = node.subgraph.asSerialisable();
    const inner = (data.nodes ?? []).filter((n) => n.id !== INPUT_NODE && n.id !== OUTPUT_NODE);
    if (!inner.length) return [];
    graph.beforeChange();
    const minX = Math.min(...inner.map((n) => n.pos[0]));
    const minY = Math.min(...inner.map((n) => n.pos[1]));
    const [dx, dy] = [node.pos[0] - minX, node.pos[1] - minY];
    const created = new Map();
    for (const info of structuredClone(inner)) {
      const oldId = info.id;
      info.id = -1;
      for (const input of info.inputs ?? []) input.link = null;
      for (const output of info.outputs ?? []) output.links = [];
      info.pos = [info.pos[0] + dx, info.pos[1] + dy];
      const copy = LiteGraph.createNode(String(info.type));
      if (!copy) continue;
      copy.configure(info);
      graph.add(copy);
      created.set(String(oldId), copy);
    }
    const links = (data.links ?? []).map((l) => (Array.isArray(l)
      ? { origin_id: l[1], origin_slot: l[2], target_id: l[3], target_slot: l[4] } : l));
    const sub = node.subgraph;
    for (const l of links) {
      const origin = created.get(String(l.origin_id));
      const target = created.get(String(l.target_id));
      if (origin && target) origin.connect(l.origin_slot, target, l.target_slot);
      else if (l.origin_id === INPUT_NODE && target) {
        const name = sub.inputs[l.origin_slot]?.name;
        const outer = graph.getLink(node.inputs.find((i) => i.name === name)?.link);
        if (outer) graph.getNodeById(outer.origin_id)?.connect(outer.origin_slot, target, l.target_slot);
        else {
          const promoted = node.widgets?.find((w) => w.name === name);
          const widget = targetWidget(target, l.target_slot);
          if (promoted && widget) widget.value = promoted.value;
        }
      } else if (l.target_id === OUTPUT_NODE && origin) {
        for (const id of [...(node.outputs[l.target_slot]?.links ?? [])]) {
          const outer = graph.getLink(id);
          const receiver = outer && graph.getNodeById(outer.target_id);
          if (receiver) origin.connect(l.origin_slot, receiver, outer.target_slot);
        }
      }
    }
    for (const info of data.groups ?? []) {
      const group = new LGraphGroup();
      group.configure({ ...info, id: -1, bounding: [info.bounding[0] + dx, info.bounding[1] + dy, info.bounding[2], info.bounding[3]] });
      graph.add(group);
    }
    graph.remove(node);
    graph.afterChange();
    this.editor.changed();
    return [...created.values()];
  }
}
