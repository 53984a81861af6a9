// Images on nodes: outputs of Save/Preview Image (from `executed`), live sampler previews (binary
// websocket frames), the chosen file of a Load Image node; and a full-size viewer.

export class Previews {
  constructor(editor, api) {
    this.editor = editor;
    this.api = api;
    this.outputs = new Map(); // node id -> [{filename, subfolder, type}]
    this.liveUrl = null;
  }

  /** An `executed` message's ui dict for a node. */
  showOutput(nodeId, output) {
    const images = output?.images ?? [];
    if (!images.length) return;
    this.outputs.set(String(nodeId), images);
    this.editor.setImages(nodeId, images.map((ref) => this.#load(this.api.viewUrl(ref))));
  }

  /** A live preview (Blob) for the running node. */
  showLive(nodeId, blob) {
    if (nodeId === null || nodeId === undefined) return;
    if (this.liveUrl) URL.revokeObjectURL(this.liveUrl);
    this.liveUrl = URL.createObjectURL(blob);
    this.editor.setImages(nodeId, [this.#load(this.liveUrl)]);
  }

  /** The file a Load Image node points at. */
  showInputImage(node, value) {
    if (!value) { this.editor.setImages(node.id, []); return; }
    const match = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(value));
    const path = match[1];
    const slash = path.lastIndexOf("/");
    const ref = { filename: path.slice(slash + 1), subfolder: slash >= 0 ? path.slice(0, slash) : "", type: match[2] ?? "input" };
    this.outputs.set(String(node.id), [ref]);
    this.editor.setImages(node.id, [this.#load(this.api.viewUrl(ref))]);
  }

  clear() {
    this.outputs.clear();
  }

  #load(url) {
    const img = new Image();
    img.onload = () => this.editor.setDirty();
    img.src = url;
    return img;
  }

  /** Open a node's images full size. */
  open(nodeId, index = 0) {
    const refs = this.outputs.get(String(nodeId));
    const urls = refs?.length ? refs.map((r) => this.api.viewUrl(r)) : (this.editor.images.get(String(nodeId)) ?? []).map((i) => i.src);
    if (urls.length) openLightbox(urls, index);
  }
}

export function openLightbox(urls, index = 0) {
  document.querySelector(".ng-lightbox")?.remove();
  const box = document.createElement("div");
  box.className = "ng-lightbox";
  box.innerHTML = `<img alt="output image"><div class="bar"><button type="button" data-step="-1">‹</button>
    <span class="count"></span><a class="download" download>download</a><button type="button" data-step="1">›</button>
    <button type="button" class="close">close</button></div>`;
  const img = box.querySelector("img");
  const show = (i) => {
    index = (i + urls.length) % urls.length;
    img.src = urls[index];
    box.querySelector(".count").textContent = `${index + 1} / ${urls.length}`;
    box.querySelector(".download").href = urls[index];
  };
  const close = () => { box.remove(); document.removeEventListener("keydown", keys, true); };
  const keys = (e) => {
    if (e.key === "Escape") close();
    else if (e.key === "ArrowLeft") show(index - 1);
    else if (e.key === "ArrowRight") show(index + 1);
    else return;
    e.preventDefault();
    e.stopPropagation();
  };
  box.addEventListener("click", (e) => {
    if (e.target === box || e.target.classList.contains("close")) close();
    const step = e.target.dataset?.step;
    if (step) show(index + Number(step));
  });
  document.addEventListener("keydown", keys, true);
  document.body.append(box);
  show(index);
}
