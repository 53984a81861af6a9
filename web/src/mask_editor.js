// The mask editor of a Load Image node: the image with its mask over it (red), a round brush with a
// size and a hardness, paint and erase, invert, clear, and save. Saving uploads the mask as ComfyUI's
// does: a PNG whose alpha is 0 where painted goes to /upload/mask with the original image as
// `original_ref`; the server puts that alpha into the original and stores it under
// input/clipspace/, and the node then loads that file, so its MASK output (1 − alpha) is the
// painted area.

const OVERLAY = [255, 40, 40]; // how the mask is shown over the image

export class MaskEditor {
  /** `app`: {api, notify(message, kind), refreshDefinitions(), previews, editor}. */
  constructor(app) {
    this.app = app;
    this.root = null;
  }

  get isOpen() {
    return Boolean(this.root);
  }

  /** The image a Load Image node shows, as {filename, subfolder, type}. */
  static imageRef(value) {
    const match = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(value ?? ""));
    const path = match[1];
    const slash = path.lastIndexOf("/");
    return { filename: path.slice(slash + 1), subfolder: slash >= 0 ? path.slice(0, slash) : "", type: match[2] ?? "input" };
  }

  async open(node) {
    const widget = node.widgets?.find((w) => w.imageUpload);
    if (!widget?.value) {
      this.app.notify("Choose an image for this node first.", "warning");
      return;
    }
    this.close();
    this.node = node;
    this.widget = widget;
    this.ref = MaskEditor.imageRef(widget.value);
    const [image, alpha] = await Promise.all([
      loadImage(this.app.api.viewUrl(this.ref)),
      loadImage(this.app.api.viewUrl(this.ref, { channel: "a" })),
    ]).catch((error) => {
      this.app.notify(`The image could not be opened: ${error.message}`, "error");
      return [];
    });
    if (!image) return;
    this.#build(image, alpha);
  }

  #build(image, alpha) {
    const { naturalWidth: w, naturalHeight: h } = image;
    const root = document.createElement("div");
    root.className = "ng-mask-editor";
    root.innerHTML = `<div class="toolbar">
        <strong>Mask editor</strong>
        <label>Brush <input type="range" name="size" min="1" max="256" value="${Math.max(4, Math.round(Math.min(w, h) / 12))}"><output></output></label>
        <label>Hardness <input type="range" name="hardness" min="0" max="1" step="0.05" value="0.8"><output></output></label>
        <span class="modes"><button type="button" data-mode="paint" class="active">Paint</button><button type="button" data-mode="erase">Erase</button></span>
        <button type="button" data-action="invert">Invert</button>
        <button type="button" data-action="clear">Clear</button>
        <span class="grow"></span>
        <button type="button" data-action="cancel">Cancel</button>
        <button type="button" data-action="save" class="primary">Save</button>
      </div>
      <div class="stage"><canvas class="image"></canvas><canvas class="mask"></canvas><div class="cursor"></div></div>`;
    document.body.append(root);
    this.root = root;
    this.width = w;
    this.height = h;
    const imageCanvas = root.querySelector("canvas.image");
    const maskCanvas = root.querySelector("canvas.mask");
    for (const c of [imageCanvas, maskCanvas]) { c.width = w; c.height = h; }
    imageCanvas.getContext("2d").drawImage(image, 0, 0);
    // The mask lives in its own canvas: alpha = mask strength (1 − the image's alpha).
    this.mask = document.createElement("canvas");
    this.mask.width = w;
    this.mask.height = h;
    const m = this.mask.getContext("2d");
    if (alpha) {
      m.drawImage(alpha, 0, 0);
      const data = m.getImageData(0, 0, w, h);
      for (let i = 0; i < data.data.length; i += 4) {
        const strength = 255 - data.data[i + 3];
        data.data[i] = 255; data.data[i + 1] = 255; data.data[i + 2] = 255; data.data[i + 3] = strength;
      }
      m.putImageData(data, 0, 0);
    }
    this.view = maskCanvas;
    this.#fit();
    this.#redraw();
    this.#bind();
  }

  /** Scale the stage so the whole image fits the window. */
  #fit() {
    const stage = this.root.querySelector(".stage");
    const box = stage.getBoundingClientRect();
    this.scale = Math.min((box.width - 20) / this.width, (box.height - 20) / this.height, 8);
    for (const c of stage.querySelectorAll("canvas")) {
      c.style.width = `${this.width * this.scale}px`;
      c.style.height = `${this.height * this.scale}px`;
    }
  }

  #redraw() {
    const ctx = this.view.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.globalCompositeOperation = "source-over";
    ctx.drawImage(this.mask, 0, 0);
    ctx.globalCompositeOperation = "source-in"; // colour the painted area
    ctx.fillStyle = `rgba(${OVERLAY.join(",")}, 0.7)`;
    ctx.fillRect(0, 0, this.width, this.height);
    ctx.globalCompositeOperation = "source-over";
  }

  get brush() {
    const form = (name) => Number(this.root.querySelector(`input[name=${name}]`).value);
    return { size: form("size"), hardness: form("hardness"), erase: this.mode === "erase" };
  }

  /** One dab of the brush at image pixel (x, y): a disc whose edge fades over (1 − hardness). */
  #dab(x, y) {
    const { size, hardness, erase } = this.brush;
    const r = size / 2;
    const ctx = this.mask.getContext("2d");
    const gradient = ctx.createRadialGradient(x, y, r * hardness, x, y, r);
    gradient.addColorStop(0, "rgba(255,255,255,1)");
    gradient.addColorStop(1, "rgba(255,255,255,0)");
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.fillStyle = hardness >= 1 ? "#fff" : gradient;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, Math.PI * 2);
    ctx.fill();
    ctx.globalCompositeOperation = "source-over";
  }

  #stroke(from, to) {
    const step = Math.max(1, this.brush.size / 6);
    const distance = Math.hypot(to[0] - from[0], to[1] - from[1]);
    for (let t = 0; t <= distance; t += step) {
      const k = distance ? t / distance : 0;
      this.#dab(from[0] + (to[0] - from[0]) * k, from[1] + (to[1] - from[1]) * k);
    }
    this.#dab(to[0], to[1]);
    this.#redraw();
  }

  #toImage(event) {
    const rect = this.view.getBoundingClientRect();
    return [(event.clientX - rect.left) / this.scale, (event.clientY - rect.top) / this.scale];
  }

  #bind() {
    const root = this.root;
    this.mode = "paint";
    const show = () => root.querySelectorAll("label").forEach((l) => { l.querySelector("output").textContent = l.querySelector("input").value; });
    root.querySelectorAll("input[type=range]").forEach((i) => i.addEventListener("input", show));
    show();
    root.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
      this.mode = b.dataset.mode;
      root.querySelectorAll("[data-mode]").forEach((x) => x.classList.toggle("active", x === b));
    }));
    root.querySelector("[data-action=invert]").addEventListener("click", () => this.invert());
    root.querySelector("[data-action=clear]").addEventListener("click", () => this.clear());
    root.querySelector("[data-action=cancel]").addEventListener("click", () => this.close());
    root.querySelector("[data-action=save]").addEventListener("click", () => this.save());
    let last = null;
    const cursor = root.querySelector(".cursor");
    this.view.addEventListener("pointerdown", (e) => {
      this.view.setPointerCapture(e.pointerId);
      last = this.#toImage(e);
      this.#stroke(last, last);
    });
    this.view.addEventListener("pointermove", (e) => {
      const size = this.brush.size * this.scale;
      Object.assign(cursor.style, { width: `${size}px`, height: `${size}px`, left: `${e.clientX - size / 2}px`, top: `${e.clientY - size / 2}px` });
      if (!last) return;
      const at = this.#toImage(e);
      this.#stroke(last, at);
      last = at;
    });
    const end = () => { last = null; };
    this.view.addEventListener("pointerup", end);
    this.view.addEventListener("pointercancel", end);
    this.keys = (e) => {
      if (e.key === "Escape") { e.stopPropagation(); this.close(); }
    };
    document.addEventListener("keydown", this.keys, true);
  }

  invert() {
    const ctx = this.mask.getContext("2d");
    const data = ctx.getImageData(0, 0, this.width, this.height);
    for (let i = 0; i < data.data.length; i += 4) {
      data.data[i] = 255; data.data[i + 1] = 255; data.data[i + 2] = 255;
      data.data[i + 3] = 255 - data.data[i + 3];
    }
    ctx.putImageData(data, 0, 0);
    this.#redraw();
  }

  clear() {
    this.mask.getContext("2d").clearRect(0, 0, this.width, this.height);
    this.#redraw();
  }

  /** The mask as ComfyUI uploads it: black, alpha = 255 − mask (painted = transparent). */
  async #maskPng() {
    const out = document.createElement("canvas");
    out.width = this.width;
    out.height = this.height;
    const ctx = out.getContext("2d");
    const data = this.mask.getContext("2d").getImageData(0, 0, this.width, this.height);
    const result = ctx.createImageData(this.width, this.height);
    for (let i = 0; i < data.data.length; i += 4) result.data[i + 3] = 255 - data.data[i + 3];
    ctx.putImageData(result, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  async save() {
    const button = this.root.querySelector("[data-action=save]");
    button.disabled = true;
    try {
      const blob = await this.#maskPng();
      const result = await this.app.api.uploadMask(blob, { name: `clipspace-mask-${Date.now()}.png`, original: this.ref });
      const value = `${result.subfolder ? `${result.subfolder}/` : ""}${result.name} [${result.type}]`;
      await this.app.refreshDefinitions({ quiet: true });
      this.widget.value = value;
      this.widget.callback?.(value);
      this.app.previews.showInputImage(this.node, value);
      this.app.editor.changed();
      this.app.notify("Mask saved");
      this.close();
    } catch (error) {
      this.app.notify(`The mask could not be saved: ${error.message}`, "error");
      button.disabled = false;
    }
  }

  close() {
    if (this.keys) document.removeEventListener("keydown", this.keys, true);
    this.keys = null;
    this.root?.remove();
    this.root = null;
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}
