// Widgets made from input specs (NodeInfo): numbers with ranges and steps, combos, single- and
// multi-line text, toggles, the seed's "control after generate", and Load Image's upload button.
// Multi-line text is drawn on the canvas and edited in a textarea laid over it while focused, so
// a graph of hundreds of prompts costs no DOM.

import { declaredInputs, defaultValue, hasSeedControl, isWidgetInput } from "./convert.js";
import { isLinked } from "./widget_inputs.js";

export const SEED_CONTROLS = ["fixed", "increment", "decrement", "randomize"];
const CONTROL_WIDGET = "control_after_generate";
const RANDOM_MAX = 1125899906842624; // 2^50, as ComfyUI: a seed a JS number holds exactly

/** Decimal places implied by a step (0.01 → 2). */
function decimals(step) {
  const text = String(step);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

/** Snap a number to the spec: integer, `round` grid, [min, max]. */
export function snapNumber(value, spec) {
  let v = Number(value);
  if (!Number.isFinite(v)) v = defaultValue(spec);
  const { min, max, round } = spec.options;
  if (spec.type === "INT") v = Math.round(v);
  else if (round) v = Math.round(v / round) * round;
  if (spec.type === "FLOAT") v = Number(v.toFixed(Math.max(decimals(round || spec.options.step || 0.01), 0) + 2));
  if (min !== undefined && v < min) v = min;
  if (max !== undefined && v > max) v = max;
  return v;
}

/**
 * Add the widgets of `def` (a NodeInfo) to `node`. `app` gives {editor, api, changed()}; widget
 * order follows the node definition, so widgets_values line up with ComfyUI's.
 */
export function buildWidgets(node, def, app) {
  const { editor } = app;
  for (const spec of declaredInputs(def).filter(isWidgetInput)) {
    const value = defaultValue(spec);
    const changed = () => app.changed(node, spec.name);
    switch (spec.type) {
      case "INT":
      case "FLOAT": {
        const step = spec.options.step ?? (spec.type === "INT" ? 1 : 0.01);
        const precision = spec.type === "INT" ? 0 : Math.min(6, decimals(spec.options.round || step));
        const kind = spec.options.display === "slider" ? "slider" : "number";
        const widget = editor.addWidget(node, kind, spec.name, value, (v, w) => {
          const snapped = snapNumber(v, spec);
          if (snapped !== v) w.value = snapped;
          changed();
        }, { min: spec.options.min, max: spec.options.max, step2: step, step: step * 10, precision, round: spec.options.round });
        widget.tooltip = spec.options.tooltip;
        widget.inputType = spec.type;
        if (hasSeedControl(spec)) {
          const control = editor.addWidget(node, "combo", CONTROL_WIDGET, "randomize", changed,
            { values: SEED_CONTROLS, serialize: false });
          control.tooltip = "What happens to the seed after each queue";
          widget.linkedWidgets = [control];
          control.seedWidget = widget;
        }
        break;
      }
      case "BOOLEAN": {
        const widget = editor.addWidget(node, "toggle", spec.name, Boolean(value), changed,
          { on: spec.options.label_on ?? "true", off: spec.options.label_off ?? "false" });
        widget.tooltip = spec.options.tooltip;
        widget.inputType = spec.type;
        break;
      }
      case "STRING": {
        const widget = spec.options.multiline
          ? editor.addCustomWidget(node, multilineWidget(spec.name, value ?? "", app, node))
          : editor.addWidget(node, "text", spec.name, value ?? "", changed, {});
        widget.tooltip = spec.options.tooltip;
        widget.inputType = spec.type;
        break;
      }
      case "COMBO": {
        const choices = spec.choices ?? [];
        const widget = editor.addWidget(node, "combo", spec.name, choices.includes(value) ? value : (choices[0] ?? ""), (v) => {
          changed();
          if (spec.options.image_upload) app.showInputImage(node, v);
        }, { values: () => app.choicesOf(node.type, spec.name) ?? choices });
        widget.tooltip = spec.options.tooltip;
        widget.inputType = "COMBO";
        if (spec.options.image_upload) {
          const upload = editor.addWidget(node, "button", "upload", "image", () => app.pickImageFor(node, widget), { serialize: false });
          upload.label = "choose file to upload";
          widget.imageUpload = true;
        }
        break;
      }
      default:
        break;
    }
  }
}

/** After a queue: move every seed whose control says so (ComfyUI's default "after" mode). A seed
 * fed by a link is left alone: its value comes from the other end (a PrimitiveNode moves its own). */
export function applySeedControls(nodes) {
  for (const node of nodes) {
    if (node.mode === 2 || node.mode === 4) continue;
    for (const control of node.widgets ?? []) {
      const seed = control.seedWidget;
      if (!seed || isLinked(node, seed)) continue;
      if (Array.isArray(seed.options.values) || typeof seed.options.values === "function") {
        moveCombo(seed, control.value);
        continue;
      }
      const min = seed.options.min ?? 0;
      const max = Math.min(seed.options.max ?? RANDOM_MAX, RANDOM_MAX);
      const step = seed.options.step2 ?? 1;
      let v = Number(seed.value);
      switch (control.value) {
        case "increment": v += step; break;
        case "decrement": v -= step; break;
        case "randomize": v = Math.floor(Math.random() * (max - min + 1) / step) * step + min; break;
        default: continue;
      }
      seed.value = Math.max(min, Math.min(max, v));
      seed.callback?.(seed.value);
    }
  }
}

/** A combo driven by a PrimitiveNode's control: the next / previous / a random choice. */
function moveCombo(widget, how) {
  const values = typeof widget.options.values === "function" ? widget.options.values() : widget.options.values;
  if (!values?.length || how === "fixed") return;
  const at = Math.max(0, values.indexOf(widget.value));
  const next = how === "increment" ? (at + 1) % values.length
    : how === "decrement" ? (at - 1 + values.length) % values.length
      : Math.floor(Math.random() * values.length);
  widget.value = values[next];
  widget.callback?.(widget.value);
}

// -- multi-line text ---------------------------------------------------------------------------

let activeEditor = null;

function multilineWidget(name, value, app, node) {
  return {
    type: "ng-multiline",
    name,
    value,
    options: { multiline: true },
    computeLayoutSize() {
      return { minHeight: 56, maxHeight: 2000, minWidth: 200 };
    },
    draw(ctx, node, width, y) {
      const height = (this.computedHeight ?? 60) - 4;
      ctx.save();
      ctx.fillStyle = "#1d1f24";
      ctx.strokeStyle = "#4a4f59";
      ctx.beginPath();
      ctx.roundRect(15, y, width - 30, height, 6);
      ctx.fill();
      ctx.stroke();
      ctx.beginPath();
      ctx.rect(15, y, width - 30, height);
      ctx.clip();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      const text = String(this.value ?? "");
      if (!text) {
        ctx.fillStyle = "#777";
        ctx.fillText(this.name, 22, y + 16);
      } else if (activeEditor?.widget !== this) {
        ctx.fillStyle = "#ddd";
        let line = 0;
        for (const row of wrap(ctx, text, width - 44)) {
          const ty = y + 16 + line * 15;
          if (ty > y + height + 12) break;
          ctx.fillText(row, 22, ty);
          line += 1;
        }
      }
      ctx.restore();
    },
    mouse(event, pos, owner) {
      if (event.type === "pointerdown" || event.type === "mousedown") {
        setTimeout(() => openTextEditor(app, owner ?? node, this), 0);
      }
      return true;
    },
  };
}

function wrap(ctx, text, width) {
  const rows = [];
  for (const paragraph of text.split("\n")) {
    let row = "";
    for (const word of paragraph.split(/(\s+)/)) {
      if (ctx.measureText(row + word).width > width && row.trim()) {
        rows.push(row);
        row = word.trimStart();
      } else {
        row += word;
      }
    }
    rows.push(row);
  }
  return rows;
}

/** Lay a textarea over the widget; every keystroke writes the widget value. */
export function openTextEditor(app, node, widget) {
  closeTextEditor();
  const { editor } = app;
  const [x, y, w, h] = editor.widgetRect(node, widget);
  const [left, top] = editor.toClient([x, y]);
  const scale = editor.view.scale;
  const area = document.createElement("textarea");
  area.className = "ng-textarea";
  area.value = widget.value ?? "";
  area.dataset.node = String(node.id);
  area.dataset.widget = widget.name;
  Object.assign(area.style, {
    left: `${left}px`, top: `${top}px`, width: `${w * scale}px`, height: `${h * scale}px`,
    fontSize: `${12 * scale}px`,
  });
  area.addEventListener("input", () => {
    widget.value = area.value;
    app.changed(node, widget.name);
  });
  area.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); closeTextEditor(); }
    e.stopPropagation(); // typing is not a canvas shortcut
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      closeTextEditor();
      app.queue();
    }
  });
  area.addEventListener("blur", () => closeTextEditor());
  document.body.append(area);
  activeEditor = { area, node, widget };
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
  editor.setDirty();
}

export function closeTextEditor() {
  if (!activeEditor) return;
  const { area } = activeEditor;
  activeEditor = null;
  area.remove();
}
