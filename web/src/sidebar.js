// The sidebar on the left of the canvas: one panel at a time (node library, models, workflows),
// opened from the top bar; the same button closes it again.

export class Sidebar {
  /** `element`: the <aside>; `panels`: {id: {title, element, render()}}. */
  constructor(element, panels) {
    this.element = element;
    this.panels = panels;
    this.open = null;
    element.querySelector(".close")?.addEventListener("click", () => this.close());
  }

  async toggle(id) {
    if (this.open === id) return this.close();
    return this.show(id);
  }

  async show(id) {
    this.open = id;
    this.element.hidden = false;
    this.element.dataset.panel = id;
    this.element.querySelector(".title").textContent = this.panels[id].title;
    for (const [key, panel] of Object.entries(this.panels)) panel.element.hidden = key !== id;
    document.querySelectorAll("[data-sidebar]").forEach((b) => b.classList.toggle("active", b.dataset.sidebar === id));
    await this.panels[id].render();
  }

  close() {
    this.open = null;
    this.element.hidden = true;
    document.querySelectorAll("[data-sidebar]").forEach((b) => b.classList.remove("active"));
  }
}
