// Short messages at the bottom of the page (a refused connection, a saved file, an interrupt).

export function toast(message, { kind = "info", timeout = 4000 } = {}) {
  let box = document.querySelector(".ng-toasts");
  if (!box) {
    box = document.createElement("div");
    box.className = "ng-toasts";
    box.setAttribute("role", "status");
    document.body.append(box);
  }
  const item = document.createElement("div");
  item.className = `ng-toast ${kind}`;
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.remove(), timeout);
  return item;
}
