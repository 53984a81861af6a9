// The queue: a counter in the top bar (from `status` messages) and a side panel listing the
// running and pending prompts (cancel each) and recent history (load its workflow, see images).

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
    for (const [promptId, entry] of Object.entries(history).reverse()) this.panel.append(this.#historyItem(promptId, entry));
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

  #historyItem(promptId, entry) {
    const el = document.createElement("div");
    el.className = `ng-queue-item history ${entry.status?.status_str ?? ""}`;
    el.dataset.prompt = promptId;
    const images = Object.values(entry.outputs ?? {}).flatMap((o) => o.images ?? []);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `${entry.prompt?.[0] ?? ""} ${entry.status?.status_str ?? ""}`;
    el.append(label);
    for (const ref of images.slice(0, 4)) {
      const img = document.createElement("img");
      img.src = this.api.viewUrl(ref, { preview: "webp;50" });
      img.alt = ref.filename;
      img.addEventListener("click", () => this.onOpenImages(images.map((r) => this.api.viewUrl(r)), images.indexOf(ref)));
      el.append(img);
    }
    const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
    if (workflow) {
      const load = document.createElement("button");
      load.type = "button";
      load.textContent = "Load";
      load.addEventListener("click", () => this.onLoadWorkflow(workflow));
      el.append(load);
    }
    return el;
  }
}
