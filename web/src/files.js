// Workflows in and out of files: download as UI JSON (or the API prompt), open a file, drop or
// paste one. A .json may be a UI workflow or an API prompt (laid out automatically); a PNG made
// here or by ComfyUI carries its workflow in text chunks. An image dropped or pasted onto a Load
// Image node is uploaded into it instead.

import { looksLikeApiPrompt, looksLikeUiWorkflow, promptToWorkflow } from "./convert.js";
import { isPng, readPngText } from "./png.js";

export class FileError extends Error {}

const MB = 1024 * 1024;
export const MAX_JSON_BYTES = 32 * MB; // far above any real workflow; a bigger .json is not one
export const MAX_PNG_BYTES = 128 * MB;

/** Parse file contents into a UI workflow. `defs` is /object_info (for API prompts). */
export async function workflowFromFile(file, defs) {
  const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  const png = isPng(head);
  const limit = png ? MAX_PNG_BYTES : MAX_JSON_BYTES;
  if (file.size > limit) {
    throw new FileError(`${file.name} is ${(file.size / MB).toFixed(0)} MB: too large for a workflow (at most ${limit / MB} MB)`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (png) {
    const chunks = await readPngText(bytes);
    try {
      if (chunks.workflow) return workflowFromJson(JSON.parse(chunks.workflow), defs, file.name, "PNG workflow");
      if (chunks.prompt) return { workflow: promptToWorkflow(JSON.parse(chunks.prompt), defs), source: "PNG prompt" };
    } catch (error) {
      if (error instanceof FileError) throw error;
      throw new FileError(`${file.name} carries a workflow that is not valid JSON (${error.message})`);
    }
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

export function workflowFromJson(data, defs, name = "the file", source = "workflow") {
  if (looksLikeUiWorkflow(data)) return { workflow: data, source };
  if (data?.workflow && looksLikeUiWorkflow(data.workflow)) return { workflow: data.workflow, source };
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
 * Drag & drop and paste on the page. `handlers`: {onWorkflowFile(file), onWorkflowText(text),
 * onImageForNode(file, node), onPasteNodes(), nodeAt(clientX, clientY), isImageNode(node),
 * selectedImageNode()}.
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
  // Paste: an image for the selected Load Image, a workflow file or workflow JSON text, else the
  // nodes copied in this editor.
  document.addEventListener("paste", async (e) => {
    if (e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    const files = [...(e.clipboardData?.files ?? [])];
    const text = e.clipboardData?.getData("text/plain") ?? "";
    const image = files.find((f) => f.type.startsWith("image/"));
    const node = handlers.selectedImageNode();
    if (image && node) await handlers.onImageForNode(image, node);
    else if (files.length) await handlers.onWorkflowFile(files[0]);
    else if (/^\s*[[{]/.test(text)) handlers.onWorkflowText(text);
    else handlers.onPasteNodes();
  }, true);
}
