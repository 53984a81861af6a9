// Node types for the canvas, made from /object_info (NodeInfo), plus the frontend-only nodes
// ComfyUI workflows contain: Note, MarkdownNote, Reroute and PrimitiveNode (never sent to the server).

import { declaredInputs, isWidgetInput } from "./convert.js";
import { primitiveSpec, rerouteSpec } from "./primitive.js";
import { addWidgetSockets, restoreWidgetSockets } from "./widget_inputs.js";
import { buildWidgets } from "./widgets.js";

const TYPE_COLORS = {
  MODEL: "#b39ddb", CLIP: "#ffd500", VAE: "#ff6e6e", CONDITIONING: "#ffa931", LATENT: "#ff9cf9",
  IMAGE: "#64b5f6", MASK: "#81c784", CONTROL_NET: "#00d78d", INT: "#29699c", FLOAT: "#aaee88", STRING: "#77ff77",
};

export function slotColors() {
  return TYPE_COLORS;
}

/** Register (or re-register) every node of `defs` on the editor. `app.defs` is read at node
 * creation, so refreshed definitions (new model files) reach new nodes too. */
export function registerDefinitions(editor, defs, app) {
  for (const [type, def] of Object.entries(defs)) {
    const inputs = declaredInputs(def).filter((s) => !isWidgetInput(s)).map((s) => ({
      name: s.name, type: s.type, tooltip: s.options.tooltip,
      label: s.section === "optional" ? `${s.name} (optional)` : undefined,
    }));
    const outputs = (def.output ?? []).map((t, i) => ({
      name: def.output_name?.[i] ?? t, type: Array.isArray(t) ? "COMBO" : t, tooltip: def.output_tooltips?.[i],
    }));
    editor.registerNodeType(type, {
      title: def.display_name || type,
      category: def.category || "other",
      description: def.description ?? "",
      inputs,
      outputs,
      outputNode: Boolean(def.output_node),
      minWidth: 240,
      build: (node) => {
        buildWidgets(node, app.defs[type] ?? def, app);
        addWidgetSockets(node);
      },
      methods: WIDGET_SOCKET_METHODS,
    });
  }
  registerFrontendNodes(editor, app);
  editor.setTypeColors(TYPE_COLORS);
}

function registerFrontendNodes(editor, app) {
  const note = (type, title) => editor.registerNodeType(type, {
    title, category: "utils", virtual: true, inputs: [], outputs: [], color: "#432", bgcolor: "#653",
    minWidth: 300,
    build: (node) => buildWidgets(node, { input: { required: { text: ["STRING", { multiline: true, default: "" }] } } }, app),
  });
  note("Note", "Note");
  note("MarkdownNote", "Markdown Note");
  editor.registerNodeType("Reroute", rerouteSpec());
  editor.registerNodeType("PrimitiveNode", primitiveSpec(app));
}

const WIDGET_SOCKET_METHODS = {
  onConfigure(info) {
    restoreWidgetSockets(this, info);
  },
};

const FRONTEND_NODES = [
  { type: "PrimitiveNode", title: "Primitive", description: "One value for one or more widgets (connect it to a widget)", inputs: [], outputs: ["*"] },
  { type: "Reroute", title: "Reroute", description: "A waypoint for a link", inputs: ["*"], outputs: ["*"] },
  { type: "Note", title: "Note", description: "Text on the canvas", inputs: [], outputs: [] },
  { type: "MarkdownNote", title: "Markdown Note", description: "Text on the canvas", inputs: [], outputs: [] },
].map((e) => ({ ...e, category: "utils", deprecated: false }));

/** Catalogue entries for the search and the category menu (the frontend-only nodes included). */
export function catalogue(defs) {
  return [...FRONTEND_NODES.filter((e) => !(e.type in defs)), ...Object.entries(defs).map(([type, def]) => ({
    type,
    title: def.display_name || type,
    category: def.category || "other",
    description: def.description ?? "",
    inputs: declaredInputs(def).filter((s) => !isWidgetInput(s)).map((s) => s.type),
    outputs: (def.output ?? []).map(String),
    deprecated: Boolean(def.deprecated),
  }))];
}
