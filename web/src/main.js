// Start-up: load the canvas library (installed by `npm ci --prefix web`), then the app. If the
// library is missing, say what to run instead of showing a blank page.

async function start() {
  let canvas;
  try {
    canvas = await import("./canvas.js");
  } catch (error) {
    const box = document.querySelector("#missing-library");
    box.hidden = false;
    box.querySelector(".detail").textContent = String(error?.message ?? error);
    document.body.dataset.ready = "missing-library";
    return;
  }
  const { App } = await import("./app.js");
  const app = new App(canvas);
  window.nodegraph = app;
  try {
    await app.init();
  } catch (error) {
    app.errors.showMessage(`The editor could not start: ${error.message}`, "Start-up failed");
    document.body.dataset.ready = "error";
    throw error;
  }
}

start();
