// The model browser: the server's model folders (/models), their files with sizes
// (/experiment/models/<folder>), a safetensors file's metadata (/view_metadata), and a file
// dragged onto the canvas becomes the loader node for it.

export const MODEL_DRAG_TYPE = "application/x-nodegraph-model";

/** The loader node and its file input for each model folder (ComfyUI's core loaders). */
export const LOADERS = {
  checkpoints: ["CheckpointLoaderSimple", "ckpt_name"],
  loras: ["LoraLoader", "lora_name"],
  vae: ["VAELoader", "vae_name"],
  controlnet: ["ControlNetLoader", "control_net_name"],
  upscale_models: ["UpscaleModelLoader", "model_name"],
  clip: ["CLIPLoader", "clip_name"],
  text_encoders: ["CLIPLoader", "clip_name"],
  unet: ["UNETLoader", "unet_name"],
  diffusion_models: ["UNETLoader", "unet_name"],
  clip_vision: ["CLIPVisionLoader", "clip_name"],
  style_models: ["StyleModelLoader", "style_model_name"],
  gligen: ["GLIGENLoader", "gligen_name"],
  hypernetworks: ["HypernetworkLoader", "hypernetwork_name"],
  photomaker: ["PhotoMakerLoader", "photomaker_model_name"],
};

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export class ModelBrowser {
  /** `app`: {api, defs}; `panel`: the sidebar section. */
  constructor(app, panel) {
    this.app = app;
    this.panel = panel;
  }

  /** The loader [nodeType, inputName] for a model file, if this server has one. */
  loaderFor(folder, name) {
    const known = LOADERS[folder];
    if (known && this.app.defs[known[0]]) return known;
    for (const [type, def] of Object.entries(this.app.defs)) { // a loader from a node pack
      for (const [input, spec] of Object.entries(def.input?.required ?? {})) {
        if (Array.isArray(spec[0]) && spec[0].includes(name) && /loader/i.test(`${type} ${def.category}`)) return [type, input];
      }
    }
    return null;
  }

  async render() {
    const folders = await this.app.api.modelFolders();
    const panel = this.panel;
    panel.replaceChildren();
    const list = document.createElement("ul");
    list.className = "model-folders";
    for (const folder of folders) {
      const li = document.createElement("li");
      const details = document.createElement("details");
      details.dataset.folder = folder;
      details.innerHTML = "<summary></summary><ul class=\"model-files\"></ul>";
      details.querySelector("summary").textContent = folder;
      details.addEventListener("toggle", () => { if (details.open) this.#files(folder, details.querySelector("ul")); });
      li.append(details);
      list.append(li);
    }
    const info = document.createElement("div");
    info.className = "model-info";
    info.hidden = true;
    panel.append(list, info);
  }

  async #files(folder, list) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: "…" }));
    const files = await this.app.api.modelFiles(folder);
    list.replaceChildren();
    for (const file of files) {
      const li = document.createElement("li");
      li.className = "model";
      li.dataset.name = file.name;
      li.draggable = Boolean(this.loaderFor(folder, file.name));
      li.innerHTML = "<span class=\"name\"></span><span class=\"size\"></span>";
      li.querySelector(".name").textContent = file.name;
      li.querySelector(".size").textContent = formatSize(file.size);
      li.title = li.draggable ? "Drag onto the canvas for its loader; click for details" : "Click for details";
      li.addEventListener("click", () => this.#details(folder, file));
      li.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData(MODEL_DRAG_TYPE, JSON.stringify({ folder, name: file.name }));
        e.dataTransfer.effectAllowed = "copy";
      });
      list.append(li);
    }
    if (!files.length) list.append(Object.assign(document.createElement("li"), { className: "empty", textContent: "No files" }));
  }

  async #details(folder, file) {
    const info = this.panel.querySelector(".model-info");
    info.hidden = false;
    info.replaceChildren();
    const title = document.createElement("h4");
    title.textContent = file.name;
    const facts = document.createElement("dl");
    const add = (term, value) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      facts.append(dt, dd);
    };
    add("folder", folder);
    add("size", `${formatSize(file.size)} (${file.size.toLocaleString("en")} bytes)`);
    if (file.modified) add("modified", new Date(file.modified * 1000).toLocaleString());
    info.append(title, facts);
    if (!file.name.endsWith(".safetensors")) return;
    try {
      const metadata = await this.app.api.modelMetadata(folder, file.name);
      const entries = Object.entries(metadata ?? {});
      if (!entries.length) add("metadata", "none");
      for (const [k, v] of entries.slice(0, 40)) add(k, typeof v === "string" ? v.slice(0, 300) : JSON.stringify(v));
    } catch (error) {
      add("metadata", `not readable (${error.status ?? error.message})`);
    }
  }
}
