// A detector's page: an image (an example, a file, a drop or the camera), its boxes, and the
// confidence and NMS thresholds. Pre- and post-processing mirror ganforge/detect (use.py, infer.py).
import { el, fail, serial } from "./page.js";
import { pictureSources } from "./sources.js";

/* global ort */
const COLOURS = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999"];

// Antialiased bilinear resize of RGBA pixels to a size x size float32 CHW tensor in [0, 1], as
// torchvision's resize(antialias=True) of a uint8 image: PIL's triangle filter widened by the scale,
// horizontal pass, rounding to uint8, vertical pass, rounding to uint8, then / 255.
function weights(inSize, outSize) {
  const scale = inSize / outSize;
  const support = Math.max(scale, 1);
  const out = [];
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const w = [];
    let sum = 0;
    for (let x = lo; x < hi; x++) {
      const d = Math.abs((x - centre + 0.5) / support);
      const v = d < 1 ? 1 - d : 0;
      w.push(v); sum += v;
    }
    out.push({ lo, w: w.map((v) => (sum ? v / sum : 0)) });
  }
  return out;
}

export function preprocess(rgba, width, height, size) {
  const wx = weights(width, size), wy = weights(height, size);
  const mid = new Uint8ClampedArray(3 * height * size); // after the horizontal pass
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < size; i++) {
      const { lo, w } = wx[i];
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let j = 0; j < w.length; j++) s += w[j] * rgba[4 * (y * width + lo + j) + c];
        mid[(c * height + y) * size + i] = Math.round(s);
      }
    }
  }
  const out = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      const { lo, w } = wy[y];
      for (let x = 0; x < size; x++) {
        let s = 0;
        for (let j = 0; j < w.length; j++) s += w[j] * mid[(c * height + lo + j) * size + x];
        out[(c * size + y) * size + x] = Math.min(255, Math.max(0, Math.round(s))) / 255;
      }
    }
  }
  return out;
}

function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

// Detections from the raw 1 x S x S x (5B+C) grid, as ganforge.detect.infer.postprocess: score =
// P(class) * confidence per predictor, kept above `conf`, NMS per class, best `maxDet` by score.
export function postprocess(raw, L, width, height, conf, nms) {
  const S = L.grid, B = L.boxes, C = L.names.length, D = 5 * B + C;
  const cands = [];
  for (let row = 0; row < S; row++) {
    for (let col = 0; col < S; col++) {
      const cell = (row * S + col) * D;
      for (let b = 0; b < B; b++) {
        const p = cell + 5 * b;
        const cx = (raw[p] + col) / S, cy = (raw[p + 1] + row) / S;
        const w = raw[p + 2] * raw[p + 2], h = raw[p + 3] * raw[p + 3];
        const box = [Math.min(Math.max((cx - w / 2) * width, 0), width), Math.min(Math.max((cy - h / 2) * height, 0), height),
          Math.min(Math.max((cx + w / 2) * width, 0), width), Math.min(Math.max((cy + h / 2) * height, 0), height)];
        for (let c = 0; c < C; c++) {
          const score = Math.fround(raw[cell + 5 * B + c] * raw[p + 4]);
          if (score > conf) cands.push({ box, score, label: c });
        }
      }
    }
  }
  cands.sort((a, b) => b.score - a.score);
  const kept = [];
  for (const d of cands) {
    if (kept.length >= L.max_det) break;
    if (kept.every((k) => k.label !== d.label || iou(k.box, d.box) <= nms)) kept.push(d);
  }
  return kept.map((d) => ({ ...d, name: L.names[d.label] }));
}

export async function showDetector(app, run, sess) {
  const L = run.layout;
  const S = L.input_size;
  const run1 = serial(fail);
  const state = { conf: L.conf, iou: L.iou, raw: null, source: null, width: 0, height: 0, live: false };
  const canvas = el("canvas", { class: "photo", id: `det-canvas-${run.id}`, width: 1, height: 1 });
  const ctx = canvas.getContext("2d");
  const work = document.createElement("canvas"); // the image at its own size, whose pixels the model sees
  const wctx = work.getContext("2d", { willReadFrequently: true });
  const table = el("tbody");
  const info = el("p", { class: "note", id: `det-info-${run.id}` });
  window.gfDetections = window.gfDetections || {};

  async function infer(source, width, height) {
    work.width = width; work.height = height;
    wctx.drawImage(source, 0, 0, width, height);
    const rgba = wctx.getImageData(0, 0, width, height).data;
    const input = new ort.Tensor("float32", preprocess(rgba, width, height, S), [1, 3, S, S]);
    const out = await sess.run({ [L.input]: input });
    Object.assign(state, { raw: out[sess.outputNames[0]].data, source, width, height });
  }
  function drawBoxes() {
    if (!state.raw) return;
    const dets = postprocess(state.raw, L, state.width, state.height, state.conf, state.iou);
    // drawn at least 640 px wide, so small images get readable labels and sharp lines
    const k = Math.max(1, Math.ceil(640 / Math.max(state.width, state.height)));
    canvas.width = state.width * k; canvas.height = state.height * k;
    ctx.imageSmoothingEnabled = k === 1;
    ctx.drawImage(work, 0, 0, canvas.width, canvas.height);
    const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
    const font = 7 * line;
    ctx.font = `${font}px system-ui, sans-serif`;
    ctx.lineWidth = line;
    table.replaceChildren();
    for (const d of dets) {
      const colour = COLOURS[d.label % COLOURS.length];
      const [x1, y1, x2, y2] = d.box.map((v) => v * k);
      ctx.strokeStyle = colour; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const text = `${d.name} ${d.score.toFixed(2)}`;
      const tw = ctx.measureText(text).width + 6, th = font + 4;
      const top = y1 - th >= 0 ? y1 - th : y1;
      ctx.fillStyle = colour; ctx.fillRect(x1, top, tw, th);
      ctx.fillStyle = "#000"; ctx.fillText(text, x1 + 3, top + th - 4);
      table.append(el("tr", {}, el("td", { text: d.name }), el("td", { text: d.score.toFixed(3) }),
        el("td", { text: d.box.map((v) => v.toFixed(1)).join(", ") })));
    }
    if (!dets.length) {
      table.append(el("tr", {}, el("td", { colspan: 3, class: "note",
        text: "no box scores above the confidence: lower it to see the model's weaker guesses" })));
    }
    window.gfDetections[run.id] = dets;
    info.textContent = `${dets.length} box${dets.length === 1 ? "" : "es"} (conf > ${state.conf}, NMS IoU ${state.iou}) on ${state.width}×${state.height}`;
  }
  const work1 = async (source, width, height) => { await infer(source, width, height); drawBoxes(); };

  function slider(id, label, value, onInput) {
    const input = el("input", { type: "range", id, min: 0.001, max: 0.99, step: 0.001, value });
    const shown = el("output", { for: id, text: Number(value).toFixed(3) });
    input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(3); onInput(Number(input.value)); run1(async () => drawBoxes()); });
    return el("div", { class: "row" }, el("label", { for: id, text: label }), input, shown);
  }

  const { fromUrl, drop, examples } = pictureSources("det", run, run1, work1);

  const controls = el("div", { class: "panel" },
    run.examples.length ? el("p", { text: "examples from the run's validation split:" }) : null, examples, drop,
    slider(`det-conf-${run.id}`, "confidence", state.conf, (v) => { state.conf = v; }),
    slider(`det-iou-${run.id}`, "NMS IoU", state.iou, (v) => { state.iou = v; }));
  const camRow = el("div", { class: "row" });
  controls.append(camRow);
  const picture = el("div", { class: "panel" }, canvas, info,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "class" }), el("th", { text: "score" }),
      el("th", { text: "box (x1, y1, x2, y2 px)" }))), table));
  app.append(el("div", { class: "layout" }, controls, picture));
  await cameraButton(camRow, run, (v, w, h) => run1(async () => { await infer(v, w, h); drawBoxes(); }), state);
  if (run.examples.length) await fromUrl(run.examples[0]);
}

// A live mode when the browser has a camera: each frame is detected as soon as the last is done.
async function cameraButton(row, run, detect, state) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  if (!devices.some((d) => d.kind === "videoinput")) return;
  const button = el("button", { type: "button", id: `det-camera-${run.id}`, "aria-pressed": "false", text: "camera" });
  const fps = el("span", { class: "fps" });
  const video = el("video", { playsinline: true, muted: true });
  let stream = null;
  async function loop() {
    let last = performance.now(), rate = 0;
    while (state.live) {
      await new Promise((resolve) => { detect(video, video.videoWidth, video.videoHeight); window.gfIdle().then(resolve); });
      const now = performance.now();
      rate = rate ? 0.9 * rate + 0.1 * (1000 / (now - last)) : 1000 / (now - last);
      last = now;
      fps.textContent = `${rate.toFixed(1)} frames/s`;
    }
  }
  button.addEventListener("click", async () => {
    state.live = !state.live;
    button.setAttribute("aria-pressed", String(state.live));
    if (state.live) {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      } catch (err) { state.live = false; button.setAttribute("aria-pressed", "false"); return fail(err); }
      video.srcObject = stream;
      await video.play();
      loop().catch(fail);
    } else if (stream) {
      stream.getTracks().forEach((t) => t.stop());
      fps.textContent = "";
    }
  });
  row.append(button, fps);
}
