// The frontend-only PrimitiveNode and Reroute, as ComfyUI's frontend has them. A PrimitiveNode
// connects only to widget sockets; on its first connection it takes that widget's type, value and
// options (numbers and combos get a "control after generate" too) and then drives every widget it
// is linked to: a value typed on it, or moved by its control after a queue, is written into them.
// A Reroute takes the type of what flows into it. Neither is ever sent to the server.

import { declaredInputs } from "./convert.js";
import { buildWidgets, SEED_CONTROLS } from "./widgets.js";
import { targetWidget } from "./widget_inputs.js";

const UNCONNECTED = "connect to widget input";
const INPUT = 1;
const OUTPUT = 2;

/** The node spec of PrimitiveNode (see Editor.registerNodeType). */
export function primitiveSpec(app) {
  return {
    title: "Primitive", category: "utils", virtual: true, inputs: [],
    outputs: [{ name: UNCONNECTED, type: "*" }],
    methods: {
      onConnectOutput(slot, type, input, target) {
        if (!input?.widget) {
          app.notify?.("A Primitive connects to widget inputs only (drop the link on a widget).", "error");
          return false;
        }
        const own = this.outputs[0].type;
        if (own !== "*" && own !== input.type) {
          app.notify?.(`This Primitive gives ${own}; “${input.widget.name}” of ${target.title} takes ${input.type}.`, "error");
          return false;
        }
        return true;
      },
      onConnectionsChange(kind, slot, connected) {
        if (kind !== OUTPUT) return;
        if (app.editor.loading) return; // restoreFrontendNodes() runs once every node is configured
        if (connected && !this.widgets?.length) adoptFirstTarget(this, app);
        else if (!connected && !(this.outputs[0].links ?? []).length) resetPrimitive(this);
        else if (connected) pushValue(this);
      },
    },
  };
}

/** The widget this PrimitiveNode feeds first: [targetNode, widget, targetDefinitionSpec]. */
function firstTarget(node) {
  const graph = node.graph;
  for (const linkId of node.outputs[0]?.links ?? []) {
    const link = graph?._links.get(linkId) ?? graph?.links?.[linkId];
    const target = link && graph.getNodeById(link.target_id);
    const widget = target && targetWidget(target, link.target_slot);
    if (widget) return [target, widget];
  }
  return [null, null];
}

function adoptFirstTarget(node, app, values = null, { push = true } = {}) {
  const [target, widget] = firstTarget(node);
  if (!target) return;
  const spec = declaredInputs(app.defs[target.type]).find((s) => s.name === widget.name);
  const type = widget.inputType ?? spec?.type ?? "*";
  node.widgets = [];
  if (spec) {
    const options = { ...spec.options };
    delete options.control_after_generate;
    delete options.image_upload;
    const raw = spec.choices ? [spec.choices, options] : [spec.type, options];
    buildWidgets(node, { input: { required: { [widget.name]: raw } } }, app);
    node.widgets.length = Math.min(node.widgets.length, 1); // the value; its control is added below
  }
  const [valueWidget] = node.widgets;
  if (!valueWidget) return;
  valueWidget.value = widget.value;
  const callback = valueWidget.callback;
  valueWidget.callback = (...args) => { callback?.(...args); pushValue(node); };
  if (type === "INT" || type === "FLOAT" || type === "COMBO") {
    const control = app.editor.addWidget(node, "combo", "control_after_generate", "fixed", () => app.changed(),
      { values: SEED_CONTROLS, serialize: false });
    control.seedWidget = valueWidget;
    valueWidget.linkedWidgets = [control];
    if (type === "COMBO") app.editor.addWidget(node, "text", "control_filter_list", "", () => app.changed(), { serialize: false });
  }
  if (values) node.widgets.forEach((w, i) => { if (i < values.length && values[i] !== null) w.value = values[i]; });
  const output = node.outputs[0];
  output.type = type;
  output.name = type;
  output.widget = { name: widget.name };
  node.setSize([Math.max(node.size[0], 220), node.computeSize()[1]]);
  if (push) pushValue(node);
}

function resetPrimitive(node) {
  node.widgets = [];
  const output = node.outputs[0];
  output.type = "*";
  output.name = UNCONNECTED;
  delete output.widget;
  node.setSize(node.computeSize());
}

/** Write the PrimitiveNode's value into every widget it feeds. */
export function pushValue(node) {
  const value = node.widgets?.[0]?.value;
  if (value === undefined) return;
  const graph = node.graph;
  for (const linkId of node.outputs[0]?.links ?? []) {
    const link = graph?._links.get(linkId);
    const target = link && graph.getNodeById(link.target_id);
    const widget = target && targetWidget(target, link.target_slot);
    if (widget) widget.value = value;
  }
  graph?.setDirtyCanvas?.(true, false);
}

/** After a workflow is loaded: PrimitiveNodes rebuild their widgets from their targets (with the
 * saved values), Reroutes take their types. `graphs`: the root graph and its subgraphs. */
export function restoreFrontendNodes(graphs, app) {
  for (const graph of graphs) {
    for (const node of graph._nodes) {
      if (node.type === "PrimitiveNode" && (node.outputs?.[0]?.links ?? []).length) {
        const saved = node.widgets_values ?? null;
        adoptFirstTarget(node, app, saved, { push: false }); // as saved: pushed on edit or queue
      } else if (node.type === "Reroute") {
        updateRerouteType(node);
      }
    }
  }
}

/** Before queueing and after a seed control moved a PrimitiveNode: push every value. */
export function pushAllPrimitives(graphs) {
  for (const graph of graphs) for (const node of graph._nodes) if (node.type === "PrimitiveNode") pushValue(node);
}

// -- Reroute ---------------------------------------------------------------------------------------

export function rerouteSpec() {
  return {
    title: "Reroute", category: "utils", virtual: true, inputs: [{ name: "", type: "*" }], outputs: [{ name: "", type: "*" }],
    size: [75, 26],
    methods: {
      onConnectionsChange(kind) {
        if (kind === INPUT || kind === OUTPUT) updateRerouteType(this);
      },
    },
  };
}

/** A Reroute's output takes the type of the link into it (or, with none, of the input it feeds),
 * down any chain of Reroutes; saved link types are left as they are. */
export function updateRerouteType(node, seen = new Set()) {
  if (seen.has(node)) return;
  seen.add(node);
  const graph = node.graph;
  if (!graph) return;
  let type = "*";
  const inLink = graph._links.get(node.inputs[0]?.link);
  if (inLink) type = graph.getNodeById(inLink.origin_id)?.outputs?.[inLink.origin_slot]?.type ?? inLink.type ?? "*";
  if (type === "*") {
    for (const id of node.outputs[0]?.links ?? []) {
      const link = graph._links.get(id);
      const target = link && graph.getNodeById(link.target_id);
      const t = target?.inputs?.[link.target_slot]?.type;
      if (t && t !== "*") { type = t; break; }
    }
  }
  node.outputs[0].type = type;
  for (const id of node.outputs[0]?.links ?? []) {
    const target = graph.getNodeById(graph._links.get(id)?.target_id);
    if (target?.type === "Reroute") updateRerouteType(target, seen);
  }
}
