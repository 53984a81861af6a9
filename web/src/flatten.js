// Subgraphs (ComfyUI's `definitions.subgraphs`) flattened into one graph for the prompt, rule for
// rule as the server's nodegraph/workflow/subgraphs.py (a test holds the two to the same prompts).
// Inner nodes get colon-path ids ("5:12", nested "5:3:12"); the boundary stays as virtual nodes
// that links resolve through: the definition's input node ("5:-10", output k = the instance's
// input k, or the instance widget's value for it) and the instance ("5", output j = the inner
// link reaching the definition's output j).

export const SUBGRAPH_INPUT = "__SubgraphInput__";
export const SUBGRAPH_OUTPUT = "__SubgraphOutput__";
export const SUBGRAPH_VALUE = "__SubgraphValue__";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_FLAT_NODES = 100000;
const MODE_NEVER = 2;
const MODE_BYPASS = 4;

export class SubgraphError extends Error {}

/** Every definition by id: the root's `definitions.subgraphs` and any nested `definitions`. */
export function subgraphDefinitions(workflow) {
  const found = new Map();
  const pending = [workflow];
  while (pending.length) {
    const graph = pending.pop();
    for (const definition of graph?.definitions?.subgraphs ?? []) {
      if (typeof definition?.id !== "string") throw new SubgraphError("a subgraph definition has no id");
      if (!found.has(definition.id)) {
        found.set(definition.id, definition);
        pending.push(definition);
      }
    }
  }
  return found;
}

/** Links of a graph as 6-arrays (the root saves arrays, definitions save objects). */
export function linksOf(graph) {
  const out = [];
  for (const item of graph?.links ?? []) {
    if (item === null || item === undefined) continue;
    if (Array.isArray(item) && item.length >= 5) out.push([item[0], item[1], item[2], item[3], item[4], item.length > 5 ? item[5] : "*"]);
    else if (typeof item === "object" && "id" in item) {
      out.push([item.id, item.origin_id, item.origin_slot ?? 0, item.target_id, item.target_slot ?? 0, item.type ?? "*"]);
    } else throw new SubgraphError(`a link must be [id, origin, slot, target, slot, type], got ${JSON.stringify(item).slice(0, 80)}`);
  }
  return out;
}

/** {nodes, links} of one flat graph; ids are strings, links are 6-arrays. */
export function flatten(workflow) {
  const definitions = subgraphDefinitions(workflow);
  const nodes = [];
  const links = [];
  const name = (d) => `'${d.name || "unnamed"}' (${d.id})`;

  const addGraph = (graph, prefix, stack) => {
    for (const l of linksOf(graph)) links.push([prefix + l[0], prefix + l[1], l[2], prefix + l[3], l[4], l[5]]);
    for (const node of graph.nodes ?? []) {
      if (!node || node.id === undefined) throw new SubgraphError("a node in 'nodes' has no id");
      const definition = typeof node.type === "string" ? definitions.get(node.type) : undefined;
      if (!definition && UUID.test(String(node.type))) {
        throw new SubgraphError(`node ${prefix}${node.id} uses subgraph ${node.type}, whose definition is not in the file's definitions.subgraphs`);
      }
      if (definition && ![MODE_NEVER, MODE_BYPASS].includes(node.mode ?? 0)) addInstance(node, definition, prefix, stack);
      else nodes.push({ ...node, id: prefix + node.id, inputs: renamed(node.inputs, prefix) });
      if (nodes.length > MAX_FLAT_NODES) throw new SubgraphError(`the subgraphs expand to more than ${MAX_FLAT_NODES} nodes`);
    }
  };

  const addInstance = (node, definition, prefix, stack) => {
    const instanceId = prefix + node.id;
    if (stack.includes(definition.id)) {
      const chain = [...stack, definition.id].map((s) => name(definitions.get(s))).join(" -> ");
      throw new SubgraphError(`node ${instanceId}: subgraph ${name(definition)} contains itself (${chain})`);
    }
    const inner = `${instanceId}:`;
    addGraph(definition, inner, [...stack, definition.id]);
    const subInputs = (definition.inputs ?? []).filter((i) => i && typeof i === "object");
    const subOutputs = (definition.outputs ?? []).filter((o) => o && typeof o === "object");
    const inputNodeId = definition.inputNode?.id ?? -10;
    const outputNodeId = definition.outputNode?.id ?? -20;

    const byName = new Map((node.inputs ?? []).map((i) => [i?.name, i]));
    const values = instanceWidgetValues(node, definition, subInputs, inputNodeId);
    const forwarded = subInputs.map((subInput, k) => {
      const link = byName.get(subInput.name)?.link;
      let linkId = link === null || link === undefined ? null : prefix + link;
      if (linkId === null && values.has(k)) {
        const valueId = `${inner}${inputNodeId}:value${k}`;
        nodes.push({ id: valueId, type: SUBGRAPH_VALUE, widgets_values: [values.get(k)] });
        links.push([valueId, valueId, 0, inner + inputNodeId, k, subInput.type ?? "*"]);
        linkId = valueId;
      }
      return { name: subInput.name ?? "", type: subInput.type ?? "*", link: linkId };
    });
    nodes.push({ id: inner + inputNodeId, type: SUBGRAPH_INPUT, inputs: forwarded });

    const reaching = new Map();
    for (const l of linksOf(definition)) {
      if (String(l[3]) === String(outputNodeId)) {
        if (!reaching.has(Number(l[4]))) reaching.set(Number(l[4]), []);
        reaching.get(Number(l[4])).push(l[0]);
      }
    }
    const returned = subOutputs.map((subOutput, j) => {
      const reach = reaching.get(j) ?? [];
      const listed = (subOutput.linkIds ?? []).filter((i) => reach.includes(i));
      const ids = listed.length ? listed : reach;
      return { name: subOutput.name ?? "", type: subOutput.type ?? "*", link: ids.length ? inner + ids.at(-1) : null };
    });
    nodes.push({ id: instanceId, type: SUBGRAPH_OUTPUT, inputs: returned, title: node.title || definition.name });
  };

  addGraph(workflow, "", []);
  return { nodes, links };
}

/** The instance's widgets_values by subgraph input index: one value per input that feeds a widget
 * inside, in input order. */
function instanceWidgetValues(node, definition, subInputs, inputNodeId) {
  const values = node.widgets_values;
  const byIndex = new Map();
  if (!Array.isArray(values) || !values.length) return byIndex;
  const widgetLinks = new Set();
  for (const inner of definition.nodes ?? []) {
    for (const slot of inner?.inputs ?? []) if (slot?.widget && slot.link !== null && slot.link !== undefined) widgetLinks.add(slot.link);
  }
  const fed = new Set();
  for (const l of linksOf(definition)) if (String(l[1]) === String(inputNodeId) && widgetLinks.has(l[0])) fed.add(Number(l[2]));
  let position = 0;
  subInputs.forEach((_, k) => {
    if (fed.has(k) && position < values.length) byIndex.set(k, values[position++]);
  });
  return byIndex;
}

function renamed(inputs, prefix) {
  return (inputs ?? []).filter((i) => i && typeof i === "object")
    .map((slot) => ({ ...slot, link: slot.link === null || slot.link === undefined ? null : prefix + slot.link }));
}
