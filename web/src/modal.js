// A small modal dialog: a message, an optional text field and buttons. `ask()` resolves with the
// chosen button's value (Escape or the backdrop: "cancel") and the field's text.

export function ask({ title, message = "", value = null, placeholder = "", buttons }) {
  document.querySelector(".ng-modal")?.remove();
  return new Promise((resolve) => {
    const backdrop = document.createElement("div");
    backdrop.className = "ng-modal";
    backdrop.innerHTML = `<form class="box" role="dialog" aria-modal="true"><h3></h3><p></p>
      <input type="text" spellcheck="false"><div class="buttons"></div></form>`;
    const form = backdrop.querySelector("form");
    form.querySelector("h3").textContent = title;
    form.querySelector("p").textContent = message;
    form.querySelector("p").hidden = !message;
    const input = form.querySelector("input");
    input.hidden = value === null;
    input.value = value ?? "";
    input.placeholder = placeholder;
    const done = (action) => {
      backdrop.remove();
      document.removeEventListener("keydown", onKey, true);
      resolve({ action, value: input.value });
    };
    for (const button of buttons) {
      const el = document.createElement("button");
      el.type = button.primary ? "submit" : "button";
      el.textContent = button.label;
      el.dataset.action = button.value;
      if (button.primary) el.className = "primary";
      if (!button.primary) el.addEventListener("click", () => done(button.value));
      form.querySelector(".buttons").append(el);
    }
    const primary = buttons.find((b) => b.primary);
    form.addEventListener("submit", (e) => { e.preventDefault(); if (primary) done(primary.value); });
    const onKey = (e) => {
      if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); done("cancel"); }
    };
    document.addEventListener("keydown", onKey, true);
    backdrop.addEventListener("pointerdown", (e) => { if (e.target === backdrop) done("cancel"); });
    document.body.append(backdrop);
    (value !== null ? input : form.querySelector("button.primary") ?? form.querySelector("button"))?.focus();
    if (value !== null) input.select();
  });
}
