// The websocket `/ws?clientId=`: JSON messages become events of the same name ("status",
// "executing", "progress", ...); binary frames become "preview" events carrying an image Blob.
// Reconnects with a growing delay and keeps the client id, so a reload mid-run catches up.

const PREVIEW_IMAGE = 1;
const PREVIEW_IMAGE_WITH_METADATA = 4;
const IMAGE_TYPES = { 1: "image/jpeg", 2: "image/png" };

export class Socket extends EventTarget {
  constructor(clientId = sessionClientId()) {
    super();
    this.clientId = clientId;
    this.ws = null;
    this.retry = 0;
    this.closed = false;
    this.connected = false;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws?clientId=${encodeURIComponent(this.clientId)}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.retry = 0;
      this.connected = true;
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.emit("connected", {});
    });
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", () => {
      this.connected = false;
      if (this.closed) return;
      this.emit("disconnected", {});
      const delay = Math.min(5000, 250 * 2 ** this.retry++);
      setTimeout(() => { if (!this.closed) this.open(); }, delay);
    });
    ws.addEventListener("error", () => {}); // "close" follows and reconnects
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  receive(data) {
    if (typeof data === "string") {
      let message;
      try { message = JSON.parse(data); } catch { return; }
      if (message.type === "status" && message.data?.sid) this.clientId = message.data.sid;
      this.emit(message.type, message.data ?? {});
      return;
    }
    const view = new DataView(data);
    const event = view.getUint32(0);
    if (event === PREVIEW_IMAGE) {
      const format = view.getUint32(4);
      this.emit("preview", { blob: new Blob([data.slice(8)], { type: IMAGE_TYPES[format] ?? "image/jpeg" }), meta: null });
    } else if (event === PREVIEW_IMAGE_WITH_METADATA) {
      const length = view.getUint32(4);
      const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 8, length)));
      this.emit("preview", { blob: new Blob([data.slice(8 + length)], { type: meta.image_type ?? "image/jpeg" }), meta });
    }
  }
}

/** One id per browser tab, kept across reloads of that tab. */
function sessionClientId() {
  let id = sessionStorage.getItem("nodegraph.clientId");
  if (!id) {
    id = crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "") : String(Math.random()).slice(2);
    sessionStorage.setItem("nodegraph.clientId", id);
  }
  return id;
}
