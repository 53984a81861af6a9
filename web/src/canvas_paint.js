// Painting on the canvas beyond the library's own drawing: run state on nodes (running, progress,
// cached, errors with their messages), images in nodes, the colours of bypassed and muted nodes,
// and nodes whose type is not installed (red, with the type name).

import { LGraphCanvas, LGraphNode, LiteGraph } from "../node_modules/@comfyorg/litegraph/dist/litegraph.es.js";

const COLORS = {
  running: "#3fdc6a", progress: "#3fdc6a", error: "#ff4d4d", cached: "#8a8f98",
  errorBg: "rgba(60, 10, 10, 0.92)", errorText: "#ffb3b3",
  bypassBg: "#6b2a75", missing: "#ff4d4d", missingBg: "#4a1c1f",
};
const MUTED_ALPHA = 0.4;
const BYPASSED_ALPHA = 0.65;

/** Install the painting hooks (once per page) for an Editor. */
export function installPainting(editor) {
  const proto = LGraphNode.prototype;
  const originalForeground = proto.onDrawForeground;
  proto.onDrawForeground = function (ctx, canvas) {
    originalForeground?.call(this, ctx, canvas);
    drawImages(editor, this, ctx);
    drawState(editor, this, ctx);
    if (this.has_errors) drawMissing(this, ctx);
  };
  // Bypassed nodes are purple and see-through, muted ones faded (ComfyUI's colours); a node of a
  // type this server lacks is red.
  const bg = Object.getOwnPropertyDescriptor(proto, "renderingBgColor");
  Object.defineProperty(proto, "renderingBgColor", {
    configurable: true,
    get() {
      if (this.mode === 4) return COLORS.bypassBg;
      if (this.has_errors) return COLORS.missingBg;
      return bg.get.call(this);
    },
  });
  const fg = Object.getOwnPropertyDescriptor(proto, "renderingColor");
  Object.defineProperty(proto, "renderingColor", {
    configurable: true,
    get() { return this.has_errors ? COLORS.missing : fg.get.call(this); },
  });
  const drawNode = LGraphCanvas.prototype.drawNode;
  LGraphCanvas.prototype.drawNode = function (node, ctx) {
    const alpha = this.editor_alpha;
    if (node.mode === 2) this.editor_alpha = alpha * MUTED_ALPHA;
    else if (node.mode === 4) this.editor_alpha = alpha * BYPASSED_ALPHA;
    try {
      drawNode.call(this, node, ctx);
    } finally {
      this.editor_alpha = alpha;
    }
  };
}

function drawMissing(node, ctx) {
  const [w, h] = node.flags?.collapsed ? [node._collapsed_width ?? 80, 0] : node.size;
  const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
  ctx.save();
  ctx.strokeStyle = COLORS.missing;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.roundRect(-2, -titleHeight - 2, w + 4, h + titleHeight + 4, 8);
  ctx.stroke();
  if (!node.flags?.collapsed) {
    ctx.fillStyle = COLORS.errorText;
    ctx.font = "12px sans-serif";
    ctx.textAlign = "left";
    ctx.fillText(`Not installed: ${node.type}`, 8, Math.min(h - 6, 16));
  }
  ctx.restore();
}

function drawImages(editor, node, ctx) {
  const images = editor.images.get(editor.stateKey(node));
  if (!images?.length || node.flags?.collapsed) return;
  const top = editor.imageTop(node) + 4;
  const [w, h] = node.size;
  const areaW = w - 10;
  const areaH = h - top - 6;
  if (areaH < 16) return;
  const columns = Math.ceil(Math.sqrt(images.length));
  const rows = Math.ceil(images.length / columns);
  const cellW = areaW / columns;
  const cellH = areaH / rows;
  images.forEach((img, i) => {
    if (!img.complete || !img.naturalWidth) return;
    const scale = Math.min(cellW / img.naturalWidth, cellH / img.naturalHeight);
    const dw = img.naturalWidth * scale;
    const dh = img.naturalHeight * scale;
    const x = 5 + (i % columns) * cellW + (cellW - dw) / 2;
    const y = top + Math.floor(i / columns) * cellH + (cellH - dh) / 2;
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(img, x, y, dw, dh);
    ctx.imageSmoothingEnabled = true;
  });
}

/** A subgraph instance shows what runs inside it: running while any inner node runs, with its progress. */
function innerState(editor, node) {
  const prefix = `${editor.stateKey(node)}:`;
  let state = null;
  for (const [key, inner] of editor.states) {
    if (!key.startsWith(prefix)) continue;
    if (inner.running || inner.progress !== undefined) state = { ...state, running: true, progress: inner.progress ?? state?.progress };
    if (inner.error) state = { ...state, error: { messages: inner.error.messages, inputs: {} } };
  }
  return state;
}

function drawState(editor, node, ctx) {
  const state = editor.states.get(editor.stateKey(node)) ?? (node.subgraph ? innerState(editor, node) : null);
  if (!state) return;
  const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
  const [w, h] = node.flags?.collapsed ? [node._collapsed_width ?? 80, 0] : node.size;
  ctx.save();
  const outline = (color, width, dash = []) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.beginPath();
    ctx.roundRect(-width, -titleHeight - width, w + 2 * width, h + titleHeight + 2 * width, 8);
    ctx.stroke();
    ctx.setLineDash([]);
  };
  if (state.cached) {
    outline(COLORS.cached, 1.5, [6, 4]);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = COLORS.cached;
    ctx.textAlign = "right";
    ctx.fillText("cached", w - 8, -titleHeight * 0.35);
  }
  if (state.running) outline(COLORS.running, 3);
  if (state.progress !== undefined && !node.flags?.collapsed) {
    ctx.fillStyle = "rgba(0,0,0,0.35)";
    ctx.fillRect(0, 0, w, 5);
    ctx.fillStyle = COLORS.progress;
    ctx.fillRect(0, 0, w * Math.max(0, Math.min(1, state.progress)), 5);
  }
  if (state.error) {
    outline(COLORS.error, 3);
    if (!node.flags?.collapsed) {
      for (const [name, message] of Object.entries(state.error.inputs ?? {})) {
        const widget = node.widgets?.find((x) => x.name === name);
        ctx.strokeStyle = COLORS.error;
        ctx.lineWidth = 2;
        if (widget) {
          const height = widget.computedHeight ? widget.computedHeight - 4 : LiteGraph.NODE_WIDGET_HEIGHT;
          ctx.beginPath();
          ctx.roundRect(12, (widget.last_y ?? widget.y) - 2, w - 24, height + 4, 8);
          ctx.stroke();
        } else {
          const index = node.inputs?.findIndex((x) => x.name === name) ?? -1;
          if (index >= 0) {
            const pos = node.getInputPos(index);
            ctx.beginPath();
            ctx.arc(pos[0] - node.pos[0], pos[1] - node.pos[1], 7, 0, Math.PI * 2);
            ctx.stroke();
          }
        }
        void message;
      }
    }
    const lines = (state.error.messages ?? []).slice(0, 6);
    if (lines.length) {
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      const wrapped = lines.flatMap((line) => wrapText(ctx, line, Math.max(w, 220) - 16));
      const boxH = wrapped.length * 16 + 10;
      ctx.fillStyle = COLORS.errorBg;
      ctx.beginPath();
      ctx.roundRect(0, h + 8, Math.max(w, 220), boxH, 6);
      ctx.fill();
      ctx.strokeStyle = COLORS.error;
      ctx.lineWidth = 1;
      ctx.stroke();
      ctx.fillStyle = COLORS.errorText;
      wrapped.forEach((line, i) => ctx.fillText(line, 8, h + 8 + 18 + i * 16));
    }
  }
  ctx.restore();
}

function wrapText(ctx, text, width) {
  const out = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > width && line) {
        out.push(line);
        line = word;
      } else {
        line = next;
      }
    }
    out.push(line);
  }
  return out;
}

