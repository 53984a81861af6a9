// Workflow formats, as pure functions over plain JSON (no canvas): the UI workflow → the API
// prompt POSTed to /prompt, and an API prompt → a UI workflow laid out automatically.
//
// The rules are those of the server's nodegraph/workflow/ui_format.py (and ComfyUI's
// graphToPrompt): widget values map positionally onto the widget inputs of the node definition,
// the seed's control_after_generate value is skipped, virtual nodes and muted (2) / bypassed (4)
// nodes are dropped, links are followed through Reroutes, bypassed nodes (type-matched
// pass-through) and subgraph boundaries (flatten.js), and PrimitiveNodes give their value. Keep
// the two in step.

import { flatten, SUBGRAPH_INPUT, SUBGRAPH_OUTPUT, SUBGRAPH_VALUE, SubgraphError } from "./flatten.js";

export const MODE_ALWAYS = 0;
export const MODE_NEVER = 2;
export const MODE_BYPASS = 4;
const VALUE_TYPES = new Set(["PrimitiveNode", SUBGRAPH_VALUE]);
const PASS_THROUGH = new Set(["Reroute", SUBGRAPH_INPUT, SUBGRAPH_OUTPUT]);
export const VIRTUAL_TYPES = new Set(["Reroute", "Note", "MarkdownNote", ...VALUE_TYPES, ...PASS_THROUGH]);
export const SEED_CONTROL_VALUES = new Set(["fixed", "increment", "decrement", "randomize", "increment-wrap"]);
const LEGACY_SEED_NAMES = new Set(["seed", "noise_seed"]); // older frontends added the control by name
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

export class WorkflowError extends Error {}

/** The declared inputs of a NodeInfo, required then optional, as {name, type, options, choices, section}. */
export function declaredInputs(info) {
  const result = [];
  for (const section of ["required", "optional"]) {
    const specs = info?.input?.[section] ?? {};
    const order = info?.input_order?.[section] ?? Object.keys(specs);
    for (const name of order) {
      const spec = specs[name];
      if (spec === undefined) continue;
      const [rawType, options = {}] = Array.isArray(spec) ? spec : [spec, {}];
      let type = rawType;
      let choices = null;
      if (Array.isArray(rawType)) {
        type = "COMBO";
        choices = rawType;
      } else if (rawType === "COMBO") {
        choices = options.options ?? [];
      }
      result.push({ name, type, options: options ?? {}, choices, section });
    }
  }
  return result;
}

export function isWidgetInput(input) {
  return WIDGET_TYPES.has(input.type) && !input.options.forceInput;
}

/** Whether an INT input carries the frontend-only "control after generate" value. */
export function hasSeedControl(input) {
  return input.type === "INT" && (Boolean(input.options.control_after_generate) || LEGACY_SEED_NAMES.has(input.name));
}

/** ComfyUI's type rule: equal, `*` on either side, or comma-separated sets that intersect. */
export function typesCompatible(outputType, inputType) {
  const a = String(outputType ?? "*");
  const b = String(inputType ?? "*");
  if (a === b || a === "*" || b === "*" || a === "" || b === "") return true;
  const left = new Set(a.split(","));
  return b.split(",").some((t) => left.has(t));
}

export function looksLikeUiWorkflow(data) {
  return data !== null && typeof data === "object" && Array.isArray(data.nodes) &&
    (Array.isArray(data.links) || data.version === 1);
}

export function looksLikeApiPrompt(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return false;
  const values = Object.values(data);
  return values.length > 0 && values.every((v) => v && typeof v === "object" && typeof v.class_type === "string");
}

function parseLinks(raw) {
  const links = new Map();
  for (const item of raw ?? []) {
    let link;
    if (Array.isArray(item) && item.length >= 5) {
      link = { id: item[0], origin_id: String(item[1]), origin_slot: Number(item[2]),
               target_id: String(item[3]), target_slot: Number(item[4]), type: item.length > 5 ? String(item[5]) : "*" };
    } else if (item && typeof item === "object" && "id" in item) {
      link = { id: item.id, origin_id: String(item.origin_id), origin_slot: Number(item.origin_slot),
               target_id: String(item.target_id), target_slot: Number(item.target_slot), type: String(item.type ?? "*") };
    } else {
      throw new WorkflowError(`a link must be [id, origin, slot, target, slot, type], got ${JSON.stringify(item).slice(0, 80)}`);
    }
    links.set(String(link.id), link);
  }
  return links;
}

/**
 * The API prompt of a UI workflow: {id: {class_type, inputs, _meta: {title}}}, subgraphs
 * flattened (ids "5:12"). `defs` is /object_info. Throws WorkflowError on a malformed workflow.
 */
export function workflowToPrompt(workflow, defs) {
  if (!looksLikeUiWorkflow(workflow)) throw new WorkflowError("not a UI-format workflow (expected 'nodes' and 'links' arrays)");
  let flat;
  try {
    flat = flatten(workflow);
  } catch (error) {
    throw error instanceof SubgraphError ? new WorkflowError(error.message) : error;
  }
  const nodes = new Map();
  for (const node of flat.nodes) nodes.set(String(node.id), node);
  const links = parseLinks(flat.links);

  const resolve = (linkId, wantedType, seen = new Set()) => {
    const key = String(linkId);
    if (seen.has(key)) throw new WorkflowError("a cycle of Reroute, bypassed or subgraph boundary nodes");
    seen.add(key);
    const link = links.get(key);
    if (!link) throw new WorkflowError(`link ${linkId} is used by a node but missing from 'links'`);
    const origin = nodes.get(link.origin_id);
    if (!origin) throw new WorkflowError(`link ${link.id} comes from node ${link.origin_id}, which does not exist`);
    const mode = origin.mode ?? MODE_ALWAYS;
    if (mode === MODE_BYPASS || PASS_THROUGH.has(origin.type)) {
      const upstream = passThroughInput(origin, link.origin_slot, wantedType);
      return upstream === null || upstream === undefined ? null : resolve(upstream, wantedType, seen);
    }
    if (VALUE_TYPES.has(origin.type)) {
      const values = origin.widgets_values ?? [];
      return values.length ? { value: values[0] } : null;
    }
    if (VIRTUAL_TYPES.has(origin.type)) return null;
    return { link: [link.origin_id, link.origin_slot] }; // a muted origin is dropped afterwards
  };

  const prompt = {};
  for (const [id, node] of nodes) {
    if (VIRTUAL_TYPES.has(node.type)) continue;
    const mode = node.mode ?? MODE_ALWAYS;
    if (mode === MODE_NEVER || mode === MODE_BYPASS) continue;
    const def = defs[node.type];
    const inputs = widgetValuesToInputs(node, def);
    for (const slot of node.inputs ?? []) {
      if (slot.link === null || slot.link === undefined) continue;
      const name = slot.widget?.name ?? slot.name;
      const source = resolve(slot.link, slot.type ?? "*");
      if (source === null) continue; // nothing reaches it: a widget keeps its own value
      inputs[name] = "value" in source ? source.value : source.link;
    }
    prompt[id] = { class_type: node.type, inputs, _meta: { title: node.title || def?.display_name || node.type } };
  }
  // An input whose origin node was dropped from the prompt is removed, as the frontend does.
  for (const entry of Object.values(prompt)) {
    for (const [name, value] of Object.entries(entry.inputs)) {
      if (Array.isArray(value) && value.length === 2 && typeof value[0] === "string" && !(value[0] in prompt)) {
        delete entry.inputs[name];
      }
    }
  }
  return prompt;
}

// widgets_values → input values, rule for rule as the server's nodegraph/workflow/widget_values.py:
// positional over the definition's widgets; the control value after a seed (a mode name, or the
// 2023 randomize checkbox `true`), the upload button's value after the last required widget, and the
// dummy values pre-1.16 frontends saved for forceInput inputs are skipped; missing values take
// the widget's default.
const UPLOAD_OPTIONS = ["image_upload", "video_upload", "audio_upload", "animated_image_upload"];
const isControlValue = (v) => typeof v === "boolean" || SEED_CONTROL_VALUES.has(v);
const flaggedControl = (spec) => spec.type === "INT" && Boolean(spec.options.control_after_generate);
const legacyControl = (spec) => spec.type === "INT" && !flaggedControl(spec) && LEGACY_SEED_NAMES.has(spec.name);

function widgetDefault(spec) {
  if ("default" in spec.options) return spec.options.default;
  if (spec.choices?.length) return spec.choices[0];
  if (spec.type === "COMBO") return undefined; // an empty list: nothing to choose
  return { INT: 0, FLOAT: 0, STRING: "", BOOLEAN: false }[spec.type];
}

function widgetValuesToInputs(node, def) {
  if (!def) return {};
  const declared = declaredInputs(def);
  const widgets = declared.filter(isWidgetInput);
  const values = node.widgets_values;
  if (values && !Array.isArray(values) && typeof values === "object") { // some custom nodes save widgets by name
    return Object.fromEntries(widgets.filter((w) => w.name in values).map((w) => [w.name, values[w.name]]));
  }
  const required = widgets.filter((w) => w.section === "required");
  const uploadAfter = widgets.some((w) => UPLOAD_OPTIONS.some((o) => w.options[o])) ? required.at(-1)?.name : undefined;
  const count = widgets.length + (uploadAfter !== undefined ? 1 : 0);
  const withControls = count + widgets.filter(flaggedControl).length;
  const withLegacy = withControls + widgets.filter(legacyControl).length;
  const list = withoutForceInputDummies(declared, Array.isArray(values) ? values : []);
  const inputs = {};
  let position = 0;
  for (const spec of widgets) {
    if (position < list.length) {
      inputs[spec.name] = list[position];
      position += 1;
      if (position < list.length) {
        const next = list[position];
        if ((flaggedControl(spec) && (isControlValue(next) || list.length >= withControls)) ||
            (legacyControl(spec) && (isControlValue(next) || list.length >= withLegacy))) position += 1;
      }
      if (spec.name === uploadAfter) position += 1;
    } else {
      const value = widgetDefault(spec);
      if (value !== undefined) inputs[spec.name] = value;
    }
  }
  return inputs;
}

function withoutForceInputDummies(declared, values) {
  const forced = (s) => s.type !== "COMBO" && s.options.forceInput;
  if (!declared.some(forced)) return values;
  const layout = [];
  for (const spec of declared) {
    if (isWidgetInput(spec) || forced(spec)) {
      layout.push(Boolean(forced(spec)));
      if (flaggedControl(spec)) layout.push(false);
    }
  }
  return layout.length === values.length ? values.filter((_, i) => !layout[i]) : values;
}

/** The input link a node forwards to its output `slot`. A Reroute and a subgraph boundary forward
 * the input of the same index (a Reroute its only one); a bypassed node the same index if its
 * type fits, else the first input of exactly the wanted type, else the first compatible one. */
function passThroughInput(node, slot, wantedType) {
  const inputs = node.inputs ?? [];
  if (PASS_THROUGH.has(node.type) && (node.mode ?? 0) !== MODE_BYPASS) {
    const index = node.type === "Reroute" ? 0 : slot;
    return index < inputs.length ? inputs[index].link : null;
  }
  if (wantedType === "*" || wantedType === "") {
    const index = slot < inputs.length ? slot : 0;
    return inputs.length ? inputs[index].link : null;
  }
  const outputType = node.outputs?.[slot]?.type ?? "*";
  const fits = (t) => typesCompatible(outputType, t) && typesCompatible(wantedType, t);
  if (slot < inputs.length && fits(String(inputs[slot].type ?? "*"))) return inputs[slot].link;
  const exact = inputs.find((i) => i.type === wantedType);
  if (exact) return exact.link;
  const compatible = inputs.find((i) => fits(String(i.type ?? "*")));
  return compatible ? compatible.link : null;
}

/** The UI `widgets_values` for a node definition and a map of input values (defaults filled in). */
export function widgetValuesFor(def, values = {}) {
  const out = [];
  for (const spec of declaredInputs(def).filter(isWidgetInput)) {
    out.push(spec.name in values ? values[spec.name] : defaultValue(spec));
    if (hasSeedControl(spec)) out.push("fixed");
    if (spec.options.image_upload) out.push("image");
  }
  return out;
}

export function defaultValue(spec) {
  if ("default" in spec.options) return spec.options.default;
  if (spec.choices) return spec.choices[0] ?? "";
  switch (spec.type) {
    case "INT": case "FLOAT": return Math.max(0, spec.options.min ?? 0);
    case "BOOLEAN": return false;
    default: return "";
  }
}

/**
 * A UI workflow from an API prompt: one node per entry, links from [id, slot] inputs, widget values
 * from constants, positions from a layered layout (columns by longest path from the sources).
 * Unknown node types are kept (with no slots) so nothing is lost silently.
 */
export function promptToWorkflow(prompt, defs) {
  const ids = Object.keys(prompt);
  const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "number";
  // Layer = longest path from a node without linked inputs.
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle: validation will report it
    visiting.add(id);
    let d = 0;
    for (const v of Object.values(prompt[id].inputs ?? {})) {
      if (isLink(v) && v[0] in prompt) d = Math.max(d, depth(v[0]) + 1);
    }
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  ids.forEach(depth);

  const nodes = [];
  const links = [];
  const byId = new Map();
  let numericIds = ids.every((id) => /^\d+$/.test(id));
  let nextId = numericIds ? Math.max(0, ...ids.map(Number)) + 1 : 1;
  const uiId = new Map(ids.map((id) => [id, numericIds ? Number(id) : nextId++]));
  if (!numericIds) nextId = ids.length + 1;

  for (const id of ids) {
    const entry = prompt[id];
    const def = defs[entry.class_type];
    const declared = def ? declaredInputs(def) : [];
    const socketInputs = declared.filter((s) => !isWidgetInput(s));
    const constants = Object.fromEntries(Object.entries(entry.inputs ?? {}).filter(([, v]) => !isLink(v)));
    const node = {
      id: uiId.get(id), type: entry.class_type, pos: [0, 0], flags: {}, order: 0, mode: MODE_ALWAYS,
      inputs: socketInputs.map((s) => ({ name: s.name, type: s.type, link: null })),
      outputs: (def?.output ?? []).map((type, i) => ({ name: def.output_name?.[i] ?? type, type, links: [], slot_index: i })),
      properties: { "Node name for S&R": entry.class_type },
      widgets_values: def ? widgetValuesFor(def, constants) : [],
    };
    if (entry._meta?.title && entry._meta.title !== def?.display_name) node.title = entry._meta.title;
    // A widget input fed by a link becomes a socket (a "converted widget").
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (!isLink(value)) continue;
      if (!node.inputs.some((s) => s.name === name)) {
        const spec = declared.find((s) => s.name === name);
        node.inputs.push({ name, type: spec?.type ?? "*", link: null, widget: spec && isWidgetInput(spec) ? { name } : undefined });
      }
    }
    nodes.push(node);
    byId.set(id, node);
  }
  let linkId = 0;
  for (const id of ids) {
    const target = byId.get(id);
    for (const [name, value] of Object.entries(prompt[id].inputs ?? {})) {
      if (!isLink(value) || !byId.has(value[0])) continue;
      const origin = byId.get(value[0]);
      const slot = target.inputs.findIndex((s) => s.name === name);
      const output = origin.outputs[value[1]];
      const type = output?.type ?? target.inputs[slot].type ?? "*";
      linkId += 1;
      links.push([linkId, origin.id, value[1], target.id, slot, type]);
      target.inputs[slot].link = linkId;
      if (output) output.links.push(linkId);
    }
  }
  // Columns 420 px apart; in a column, nodes stacked in order of their first consumer's position.
  const columns = new Map();
  for (const id of ids) {
    const l = layer.get(id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(id);
  }
  for (const [l, members] of [...columns.entries()].sort((a, b) => a[0] - b[0])) {
    let y = 80;
    for (const id of members) {
      const node = byId.get(id);
      // Sizes are left to the editor (each node type knows its own); this estimate only spaces
      // the column, generously: multi-line text gets a taller slot.
      const def = defs[node.type];
      const widgets = def ? declaredInputs(def).filter(isWidgetInput) : [];
      const widgetHeight = widgets.reduce((h, s) => h + (s.options.multiline ? 64 : 24) + (hasSeedControl(s) ? 24 : 0), 0);
      const height = 30 + Math.max(node.inputs.length, node.outputs.length) * 20 + widgetHeight + 16;
      delete node.size;
      node.pos = [60 + l * 420, y];
      y += height + 70;
    }
  }
  nodes.forEach((n, i) => { n.order = i; });
  return {
    last_node_id: Math.max(0, ...nodes.map((n) => n.id)), last_link_id: linkId,
    nodes, links, groups: [], config: {}, extra: {}, version: 0.4, // no view: the editor fits it
  };
}
