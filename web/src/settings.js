// Settings, kept on the server through /settings (ComfyUI's ids where it has one): light or dark
// theme, how links are drawn, snap to grid and its size; and the list of keyboard shortcuts.

import { GESTURES, keyLabel, SHORTCUTS } from "./shortcuts.js";

export const SETTINGS = {
  "Comfy.ColorPalette": { label: "Theme", default: "dark", choices: [["dark", "Dark"], ["light", "Light"]] },
  "Comfy.LinkRenderMode": { label: "Links", default: 2, choices: [[2, "Curved (spline)"], [1, "Angled (linear)"], [0, "Straight"]] },
  "pysssss.SnapToGrid": { label: "Snap to grid", default: false, boolean: true },
  "Comfy.SnapToGrid.GridSize": { label: "Grid size", default: 10, min: 1, max: 200 },
};

export class Settings {
  /** `app`: {api, editor, notify}; `dialog`: the settings dialog element. */
  constructor(app, dialog) {
    this.app = app;
    this.dialog = dialog;
    this.values = Object.fromEntries(Object.entries(SETTINGS).map(([id, s]) => [id, s.default]));
  }

  async load() {
    try {
      const saved = await this.app.api.settings();
      for (const id of Object.keys(SETTINGS)) if (id in (saved ?? {})) this.values[id] = saved[id];
    } catch {
      // defaults: the server keeps no settings for this user yet
    }
    this.apply();
  }

  get(id) {
    return this.values[id];
  }

  async set(id, value) {
    this.values[id] = value;
    this.apply();
    try {
      await this.app.api.setSetting(id, value);
    } catch (error) {
      this.app.notify(`The setting was not saved on the server: ${error.message}`, "error");
    }
  }

  apply() {
    const { editor } = this.app;
    const theme = this.values["Comfy.ColorPalette"] === "light" ? "light" : "dark";
    document.body.dataset.theme = theme;
    editor.setTheme(theme);
    editor.setLinkRenderMode(Number(this.values["Comfy.LinkRenderMode"]));
    editor.setSnapToGrid(Boolean(this.values["pysssss.SnapToGrid"]), Number(this.values["Comfy.SnapToGrid.GridSize"]) || 10);
  }

  open() {
    this.dialog.hidden = false;
    const body = this.dialog.querySelector(".body");
    body.replaceChildren();
    const form = document.createElement("form");
    form.className = "settings";
    for (const [id, spec] of Object.entries(SETTINGS)) {
      const label = document.createElement("label");
      label.append(Object.assign(document.createElement("span"), { textContent: spec.label }));
      let input;
      if (spec.choices) {
        input = document.createElement("select");
        for (const [value, text] of spec.choices) input.append(new Option(text, String(value), false, String(this.values[id]) === String(value)));
        input.addEventListener("change", () => this.set(id, typeof spec.default === "number" ? Number(input.value) : input.value));
      } else if (spec.boolean) {
        input = Object.assign(document.createElement("input"), { type: "checkbox", checked: Boolean(this.values[id]) });
        input.addEventListener("change", () => this.set(id, input.checked));
      } else {
        input = Object.assign(document.createElement("input"), { type: "number", min: spec.min, max: spec.max, value: this.values[id] });
        input.addEventListener("change", () => this.set(id, Math.max(spec.min, Math.min(spec.max, Number(input.value) || spec.default))));
      }
      input.name = id;
      label.append(input);
      form.append(label);
    }
    const keys = document.createElement("table");
    keys.className = "shortcuts";
    keys.innerHTML = "<caption>Keyboard shortcuts</caption>";
    for (const s of SHORTCUTS.filter((x) => !x.hidden)) keys.append(row(keyLabel(s.keys), s.label));
    for (const [gesture, what] of GESTURES) keys.append(row(gesture, what));
    body.append(form, keys);
  }

  close() {
    this.dialog.hidden = true;
  }
}

function row(key, what) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  th.append(Object.assign(document.createElement("kbd"), { textContent: key }));
  tr.append(th, Object.assign(document.createElement("td"), { textContent: what }));
  return tr;
}
