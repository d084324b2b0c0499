// The served page: reads /runs.json, shows one run at a time, and runs its model with onnxruntime-web.
import { showGan } from "./gan.js";
import { showDetector } from "./detect.js";
import { showTranslator } from "./translate.js";

/* global ort */
ort.env.wasm.wasmPaths = "/assets/"; // the runtime's .mjs and .wasm come from this server only
ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no cross-origin isolation is needed
ort.env.wasm.proxy = false;

const queues = [];

// One inference at a time per model; while one runs, only the latest request waits (a slider
// dragged quickly renders its last position, not every step on the way).
export function serial(onError) {
  let running = false;
  let next = null;
  const q = { idle: () => !running && next === null };
  queues.push(q);
  async function pump() {
    running = true;
    while (next) {
      const job = next;
      next = null;
      try { await job(); } catch (err) { onError(err); }
    }
    running = false;
  }
  return (job) => { next = job; if (!running) pump(); };
}

// For tests and benchmarks: resolves once no inference is queued or running.
window.gfIdle = () => new Promise((resolve) => {
  const check = () => (queues.every((q) => q.idle()) ? resolve() : setTimeout(check, 5));
  check();
});

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function fail(err) {
  console.error(err);
  const box = document.getElementById("status") || document.getElementById("app").appendChild(el("p", { id: "status" }));
  box.className = "error";
  box.textContent = `error: ${err && err.message ? err.message : err}`;
}

// One session per model file (a CycleGAN run has two), made the first time it is shown.
const sessions = new Map();
export function session(entry) {
  if (!sessions.has(entry.model)) {
    sessions.set(entry.model, ort.InferenceSession.create(entry.model, { executionProviders: ["wasm"] }));
  }
  return sessions.get(entry.model);
}

const KINDS = { gan: "generator", detect: "detector", translate: "translator" };

async function show(run) {
  const app = document.getElementById("app");
  app.replaceChildren(el("h2", { text: `${run.name} (${KINDS[run.task]})` }),
    el("p", { id: "status", class: "note", text: "loading the model…" }));
  const sess = await session(run);
  const view = { gan: showGan, detect: showDetector, translate: showTranslator }[run.task];
  await view(app, run, sess);
  document.getElementById("status").remove();
}

async function main() {
  const { runs } = await (await fetch("/runs.json")).json();
  const pick = document.getElementById("run-select");
  runs.forEach((r) => pick.append(el("option", { value: r.id, text: `${r.name} (${r.task})` })));
  document.getElementById("run-pick").hidden = runs.length < 2;
  const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("run") || 0);
  pick.value = String(runs[wanted] ? wanted : 0);
  pick.addEventListener("change", () => {
    history.replaceState(null, "", `#run=${pick.value}`);
    show(runs[Number(pick.value)]).then(() => window.gfIdle()).catch(fail);
  });
  await show(runs[Number(pick.value)]);
  await window.gfIdle();
  // the time from navigation to the first picture drawn: what bench/serve_ready.py reports
  window.gfReadyMs = performance.now();
  document.body.dataset.ready = "1";
}

main().catch(fail);
