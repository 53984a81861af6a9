// Workflows in and out of files: download as UI JSON (or the API prompt), open a file, drop or
// paste one. A .json may be a UI workflow or an API prompt (laid out automatically); a PNG made
// here or by ComfyUI carries its workflow in text chunks. An image dropped or pasted onto a Load
// Image node is uploaded into it instead.

import { looksLikeApiPrompt, looksLikeUiWorkflow, promptToWorkflow } from "./convert.js";
import { isPng, readPngText } from "./png.js";

export class FileError extends Error {}

/** Parse file contents into a UI workflow. `defs` is /object_info (for API prompts). */
export async function workflowFromFile(file, defs) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (isPng(bytes)) {
    const chunks = await readPngText(bytes);
    if (chunks.workflow) return { workflow: JSON.parse(chunks.workflow), source: "PNG workflow" };
    if (chunks.prompt) return { workflow: promptToWorkflow(JSON.parse(chunks.prompt), defs), source: "PNG prompt" };
    throw new FileError(`${file.name} holds no workflow (no "workflow" or "prompt" text chunk)`);
  }
  let data;
  try {
    data = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new FileError(`${file.name} is neither a workflow JSON nor a PNG with a workflow`);
  }
  return workflowFromJson(data, defs, file.name);
}

export function workflowFromJson(data, defs, name = "the file") {
  if (looksLikeUiWorkflow(data)) return { workflow: data, source: "workflow" };
  if (data?.workflow && looksLikeUiWorkflow(data.workflow)) return { workflow: data.workflow, source: "workflow" };
  if (data?.prompt && looksLikeApiPrompt(data.prompt)) return { workflow: promptToWorkflow(data.prompt, defs), source: "API prompt" };
  if (looksLikeApiPrompt(data)) return { workflow: promptToWorkflow(data, defs), source: "API prompt" };
  throw new FileError(`${name} is not a ComfyUI workflow (UI or API format)`);
}

export function download(name, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Let the user pick a file; resolves the File or null. */
export function pickFile(accept) {
  return new Promise((resolve) => {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = accept;
    input.style.display = "none";
    input.addEventListener("change", () => { resolve(input.files?.[0] ?? null); input.remove(); });
    document.body.append(input);
    input.click();
  });
}

/**
 * Drag & drop and paste on the page. `handlers`: {onWorkflowFile(file), onImageForNode(file, node),
 * nodeAt(clientX, clientY), selectedImageNode()}.
 */
export function installDropAndPaste(target, handlers) {
  target.addEventListener("dragover", (e) => {
    if (e.dataTransfer?.types?.includes("Files")) {
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    }
  });
  target.addEventListener("drop", async (e) => {
    const file = e.dataTransfer?.files?.[0];
    if (!file) return;
    e.preventDefault();
    const node = handlers.nodeAt(e.clientX, e.clientY);
    if (node && file.type.startsWith("image/") && handlers.isImageNode(node)) {
      await handlers.onImageForNode(file, node);
      return;
    }
    await handlers.onWorkflowFile(file);
  });
  document.addEventListener("paste", async (e) => {
    if (e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement) return;
    const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    const node = handlers.selectedImageNode();
    if (file && node) {
      e.preventDefault();
      e.stopImmediatePropagation();
      await handlers.onImageForNode(file, node);
    }
  }, true);
}
