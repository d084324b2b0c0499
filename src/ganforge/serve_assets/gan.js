// A generator's page: seeds, the path between two seeds, a conditional run's class, InfoGAN's codes,
// and a grid that sweeps one of them across a row.
import { el, fail, serial } from "./page.js";
import { pageNoise } from "./latents.js";

/* global ort */
const SWEEP = [-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2]; // a continuous code's grid columns (eval's sweep)
const GRID_ROWS = 4;
const MAX_SEED = 4294967295;

function randomSeed() { return crypto.getRandomValues(new Uint32Array(1))[0] % 100000; }

// uint8 pixels as ganforge's to_uint8 makes them: pm1 -> (x + 1) * 127.5, 01 -> x * 255, rounded.
export function toPixels(data, channels, size, pixelRange, target, x0 = 0, y0 = 0, stride = size) {
  const plane = size * size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const o = 4 * ((y0 + y) * stride + x0 + x);
      for (let c = 0; c < 3; c++) {
        const v = data[(channels === 1 ? 0 : c) * plane + y * size + x];
        const s = pixelRange === "pm1" ? (v + 1) * 127.5 : v * 255;
        target[o + c] = Math.min(255, Math.max(0, Math.round(s)));
      }
      target[o + 3] = 255;
    }
  }
}

function codeMeaning(run, name, j) {
  const m = run.measured || {};
  if (name === "cat") {
    const cat = m.categorical;
    return cat ? { text: "digit class", figure: `agreement ${(100 * cat.agreement).toFixed(1)}% with the classifier` }
      : { text: "categorical code", figure: "not measured: run `ganforge eval RUN`" };
  }
  const cont = m.continuous;
  if (!cont || !cont.codes[name]) return { text: `continuous code ${j + 1}`, figure: "not measured: run `ganforge eval RUN`" };
  const rho = cont.codes[name];
  const means = name === cont.slant_code ? "slant" : name === cont.width_code ? "stroke width" : "no clear meaning";
  const f = (v) => (v >= 0 ? "+" : "") + v.toFixed(2);
  return { text: means, figure: `Spearman ρ ${f(rho.slant)} with slant, ${f(rho.width)} with width` };
}

export async function showGan(app, run, sess) {
  const L = run.layout;
  const size = L.image_size;
  const run1 = serial(fail);
  const names = L.inputs;
  const k = L.categorical, c = L.continuous;
  const codeNames = [...(k ? ["cat"] : []), ...Array.from({ length: c }, (_, j) => `c${j + 1}`)];
  const state = { seedA: 0, seedB: 1, t: 0, label: 0, cat: 0, cont: new Array(c).fill(0), grid: false,
    sweep: L.num_classes ? "class" : codeNames[0] || "path" };

  function feeds(over = {}) {
    const s = { ...state, ...over };
    const f = { z: new ort.Tensor("float32", pageNoise(L.latent_dim, s.seedA, s.seedB, s.t), [1, L.latent_dim]) };
    if (L.num_classes) f.labels = new ort.Tensor("int64", BigInt64Array.from([BigInt(s.label)]), [1]);
    if (k || c) {
      const codes = new Float32Array(k + c);
      if (k) codes[s.cat] = 1;
      s.cont.forEach((v, j) => { codes[k + j] = v; });
      f.codes = new ort.Tensor("float32", codes, [1, k + c]);
    }
    return Object.fromEntries(names.map((n) => [n, f[n]])); // the inputs `ganforge export` names
  }
  async function image(over) {
    const out = await sess.run(feeds(over));
    return out[sess.outputNames[0]].data;
  }

  const canvas = el("canvas", { class: "pixels", id: `gan-canvas-${run.id}`, width: size, height: size });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const grid = el("canvas", { class: "grid", id: `gan-grid-${run.id}`, hidden: true });
  const caption = el("p", { class: "note", id: `gan-caption-${run.id}` });

  async function draw() {
    const data = await image();
    const img = ctx.createImageData(size, size);
    toPixels(data, L.channels, size, L.pixel_range, img.data);
    ctx.putImageData(img, 0, 0);
    caption.textContent = `seed ${state.seedA}` + (state.t ? ` → ${state.seedB} at t = ${state.t.toFixed(2)}` : "")
      + (L.num_classes ? `, class ${state.label}` : "");
    if (state.grid) await drawGrid();
  }

  function sweepValues() {
    if (state.sweep === "class") return Array.from({ length: L.num_classes }, (_, v) => ({ label: v }));
    if (state.sweep === "cat") return Array.from({ length: k }, (_, v) => ({ cat: v }));
    if (state.sweep === "path") return Array.from({ length: 9 }, (_, i) => ({ t: i / 8 }));
    const j = Number(state.sweep.slice(1)) - 1;
    return SWEEP.map((v) => { const cont = state.cont.slice(); cont[j] = v; return { cont }; });
  }
  async function drawGrid() {
    const cols = sweepValues();
    grid.width = cols.length * size;
    grid.height = GRID_ROWS * size;
    const g = grid.getContext("2d");
    const img = g.createImageData(grid.width, grid.height);
    for (let r = 0; r < GRID_ROWS; r++) {
      for (let i = 0; i < cols.length; i++) {
        const data = await image({ seedA: (state.seedA + r) % (MAX_SEED + 1), ...cols[i] });
        toPixels(data, L.channels, size, L.pixel_range, img.data, i * size, r * size, grid.width);
      }
    }
    g.putImageData(img, 0, 0);
  }
  const redraw = () => run1(draw);

  function seedInput(key, label) {
    const input = el("input", { type: "number", id: `gan-${key}-${run.id}`, min: 0, max: MAX_SEED, step: 1, value: state[key] });
    input.addEventListener("input", () => {
      const v = Number(input.value);
      if (Number.isInteger(v) && v >= 0 && v <= MAX_SEED) { state[key] = v; redraw(); }
    });
    const fresh = el("button", { type: "button", text: "new", onclick: () => { input.value = randomSeed(); input.dispatchEvent(new Event("input")); } });
    return el("div", { class: "row" }, el("label", { for: input.id, text: label }), input, fresh);
  }
  function slider(id, min, max, step, value, onInput) {
    const input = el("input", { type: "range", id, min, max, step, value });
    const shown = el("output", { for: id, text: Number(value).toFixed(2) });
    input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(2); onInput(Number(input.value)); redraw(); });
    return [input, shown];
  }

  const controls = el("div", { class: "panel" });
  controls.append(seedInput("seedA", "seed"), seedInput("seedB", "towards seed"));
  const [tInput, tShown] = slider(`gan-t-${run.id}`, 0, 1, 0.01, 0, (v) => { state.t = v; });
  controls.append(el("div", { class: "row" }, el("label", { for: tInput.id, text: "between" }), tInput, tShown));
  if (L.num_classes) {
    const pick = el("select", { id: `gan-class-${run.id}` });
    for (let v = 0; v < L.num_classes; v++) pick.append(el("option", { value: v, text: (L.class_names || [])[v] ?? `class ${v}` }));
    pick.addEventListener("change", () => { state.label = Number(pick.value); redraw(); });
    controls.append(el("div", { class: "row" }, el("label", { for: pick.id, text: "class" }), pick));
  }
  codeNames.forEach((name, i) => {
    const meaning = codeMeaning(run, name, i - (k ? 1 : 0));
    const label = el("span", { class: "code-label" }, el("b", { text: `${name}: ${meaning.text} ` }),
      el("span", { class: "figure", text: `(${meaning.figure})` }));
    let input, shown;
    if (name === "cat") {
      [input, shown] = slider(`gan-code-${name}-${run.id}`, 0, k - 1, 1, 0, (v) => { state.cat = v; });
      const matching = (run.measured.categorical || {}).matching || {};
      const name_ = () => { shown.textContent = `${input.value}${matching[input.value] !== undefined ? ` → class ${matching[input.value]}` : ""}`; };
      input.addEventListener("input", name_);
      name_();
    } else {
      const j = i - (k ? 1 : 0);
      [input, shown] = slider(`gan-code-${name}-${run.id}`, -2, 2, 0.01, 0, (v) => { state.cont[j] = v; });
    }
    controls.append(label, el("div", { class: "row" }, input, shown));
  });

  const sweeps = [...(L.num_classes ? ["class"] : []), ...codeNames, "path"];
  const sweepPick = el("select", { id: `gan-sweep-${run.id}` }, ...sweeps.map((s) => el("option", { value: s,
    text: s === "path" ? "seed → towards seed" : s === "class" ? "class" : `code ${s}` })));
  sweepPick.value = state.sweep;
  sweepPick.addEventListener("change", () => { state.sweep = sweepPick.value; redraw(); });
  const gridButton = el("button", { type: "button", id: `gan-grid-toggle-${run.id}`, "aria-pressed": "false", text: "grid" });
  gridButton.addEventListener("click", () => {
    state.grid = !state.grid;
    gridButton.setAttribute("aria-pressed", String(state.grid));
    grid.hidden = !state.grid;
    redraw();
  });
  controls.append(el("div", { class: "row" }, gridButton, el("label", { for: sweepPick.id, text: "sweep across a row" }), sweepPick));

  const picture = el("div", { class: "panel" }, canvas, caption, grid,
    el("p", { class: "note", text: `${size}×${size}, ${L.channels === 1 ? "grey" : "colour"}; z has ${L.latent_dim} dimensions` }));
  app.append(el("div", { class: "layout" }, controls, picture));
  redraw();
}
