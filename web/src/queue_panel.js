// The queue: a counter in the top bar (from `status` messages) and a side panel listing the
// running and pending prompts (cancel each) and the history as a gallery of results, newest first:
// click an image for the full-size viewer (arrows go through all of them), and each result has a
// button that loads the workflow that made it.

export class QueuePanel {
  constructor({ api, counter, panel, onLoadWorkflow, onOpenImages }) {
    this.api = api;
    this.counter = counter;
    this.panel = panel;
    this.onLoadWorkflow = onLoadWorkflow;
    this.onOpenImages = onOpenImages;
    this.remaining = 0;
    this.refreshing = null;
  }

  setRemaining(n) {
    this.remaining = n;
    this.counter.textContent = `Queue: ${n}`;
    this.counter.dataset.count = String(n);
    if (!this.panel.hidden) this.refresh();
  }

  toggle() {
    this.panel.hidden = !this.panel.hidden;
    if (!this.panel.hidden) this.refresh();
  }

  refresh() {
    clearTimeout(this.refreshing);
    this.refreshing = setTimeout(() => this.#render().catch(() => {}), 100);
  }

  async #render() {
    const [queue, history] = await Promise.all([this.api.queue(), this.api.history(20)]);
    const section = (title) => {
      const h = document.createElement("h3");
      h.textContent = title;
      this.panel.append(h);
    };
    this.panel.replaceChildren();
    section(`Running (${queue.queue_running.length})`);
    for (const item of queue.queue_running) this.panel.append(this.#item(item, "running"));
    section(`Pending (${queue.queue_pending.length})`);
    for (const item of [...queue.queue_pending].sort((a, b) => a[0] - b[0])) this.panel.append(this.#item(item, "pending"));
    const clear = document.createElement("button");
    clear.type = "button";
    clear.textContent = "Clear pending";
    clear.addEventListener("click", async () => { await this.api.clearQueue(); this.refresh(); });
    this.panel.append(clear);
    section("History");
    const gallery = document.createElement("div");
    gallery.className = "gallery";
    const all = [];
    for (const [promptId, entry] of Object.entries(history).reverse()) {
      for (const tile of this.#historyTiles(promptId, entry, all)) gallery.append(tile);
    }
    if (!gallery.children.length) gallery.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "Nothing run yet" }));
    const clearHistory = document.createElement("button");
    clearHistory.type = "button";
    clearHistory.textContent = "Clear history";
    clearHistory.addEventListener("click", async () => { await this.api.clearHistory(); this.refresh(); });
    this.panel.append(gallery, clearHistory);
  }

  #item(item, kind) {
    const [number, promptId, , extra] = item;
    const el = document.createElement("div");
    el.className = `ng-queue-item ${kind}`;
    el.dataset.prompt = promptId;
    el.innerHTML = `<span class="label"></span> <button type="button"></button>`;
    el.querySelector(".label").textContent = `#${number} ${promptId.slice(0, 8)}`;
    const button = el.querySelector("button");
    button.textContent = kind === "running" ? "Interrupt" : "Cancel";
    button.addEventListener("click", async () => {
      if (kind === "running") await this.api.interrupt(promptId);
      else await this.api.deleteFromQueue([promptId]);
      this.refresh();
    });
    if (extra?.extra_pnginfo?.workflow) {
      const load = document.createElement("button");
      load.type = "button";
      load.textContent = "Load";
      load.addEventListener("click", () => this.onLoadWorkflow(extra.extra_pnginfo.workflow));
      el.append(load);
    }
    return el;
  }

  /** One tile per output image of a history entry (one text tile when it made none). */
  #historyTiles(promptId, entry, all) {
    const images = Object.values(entry.outputs ?? {}).flatMap((o) => o.images ?? []);
    const status = entry.status?.status_str ?? "";
    const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
    const number = entry.prompt?.[0] ?? "";
    const tile = (image) => {
      const el = document.createElement("figure");
      el.className = `ng-queue-item history tile ${status}`;
      el.dataset.prompt = promptId;
      if (image) {
        const url = this.api.viewUrl(image);
        const index = all.push(url) - 1;
        const img = document.createElement("img");
        img.src = this.api.viewUrl(image, { preview: "webp;70" });
        img.alt = image.filename;
        img.title = `${image.filename} — click for full size`;
        img.addEventListener("click", () => this.onOpenImages(all, index));
        el.append(img);
      }
      const caption = document.createElement("figcaption");
      caption.className = "label";
      caption.textContent = `#${number} ${status}`;
      el.append(caption);
      if (workflow) {
        const load = document.createElement("button");
        load.type = "button";
        load.className = "load";
        load.textContent = "Load workflow";
        load.title = "Open the workflow that made this in a new tab";
        load.addEventListener("click", () => this.onLoadWorkflow(workflow));
        el.append(load);
      }
      return el;
    };
    return images.length ? images.map(tile) : [tile(null)];
  }
}
