// A translation run's page: an image (an example, a file or a drop) and its translation beside it.
// Pre- and post-processing mirror ganforge/translate/use.py and the decoder it reads files with:
// transparent pixels on white, channels to the generator's input (luminance, or grey repeated),
// edges replicated up to the next multiple of the generator's downsampling, pixels / 127.5 - 1,
// then (output + 1) * 127.5 rounded and clipped, cropped back to the image's own size.
import { el, fail, serial, session } from "./page.js";
import { pictureSources } from "./sources.js";

/* global ort */
const BACKGROUND = 255; // ganforge.data.decode: what transparent pixels are composited onto

// RGBA -> uint8 planes (C x H x W) as ganforge reads a file: alpha composited onto white, then
// Pillow's convert("L") (ITU-R 601-2 in 16-bit fixed point) for one channel, or RGB for three.
export function toPlanes(rgba, width, height, channels) {
  const n = width * height;
  const out = new Uint8Array(channels * n);
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3] / 255;
    const rgb = [0, 1, 2].map((c) => (a === 1 ? rgba[4 * i + c]
      : Math.min(255, Math.max(0, Math.round(rgba[4 * i + c] * a + BACKGROUND * (1 - a))))));
    if (channels === 1) out[i] = (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
    else for (let c = 0; c < 3; c++) out[c * n + i] = rgb[c];
  }
  return out;
}

// uint8 planes -> float32 1 x C x H' x W' in [-1, 1], edges replicated up to the multiple.
export function preprocess(planes, width, height, channels, multiple) {
  const H = height + ((multiple - (height % multiple)) % multiple);
  const W = width + ((multiple - (width % multiple)) % multiple);
  const out = new Float32Array(channels * H * W);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < H; y++) {
      const sy = Math.min(y, height - 1);
      for (let x = 0; x < W; x++) {
        out[(c * H + y) * W + x] = planes[(c * height + sy) * width + Math.min(x, width - 1)] / 127.5 - 1;
      }
    }
  }
  return { data: out, H, W };
}

// The raw C' x H' x W' output -> RGBA pixels of the top-left width x height (grey repeated).
export function postprocess(raw, channels, H, W, width, height) {
  const rgba = new Uint8ClampedArray(4 * width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = 4 * (y * width + x);
      for (let c = 0; c < 3; c++) {
        const v = raw[((channels === 1 ? 0 : c) * H + y) * W + x];
        rgba[o + c] = Math.min(255, Math.max(0, Math.round((v + 1) * 127.5)));
      }
      rgba[o + 3] = 255;
    }
  }
  return rgba;
}

const ARROWS = { AtoB: "A → B", BtoA: "B → A" };

// A CycleGAN run has a generator each way: a switch shows one at a time, with its own examples.
export async function showTranslator(app, run, sess) {
  if (!run.directions) return showDirection(app, run, run, sess);
  const holder = el("div");
  const switch1 = serial(fail); // the page is busy (gfIdle waits) until the new direction is drawn
  const buttons = run.directions.map((side, k) => el("button", {
    type: "button", id: `tr-dir-${run.id}-${side.direction}`, "aria-pressed": "false",
    onclick: () => switch1(() => pick(k)),
  }, ARROWS[side.direction]));
  async function pick(k) {
    buttons.forEach((b, j) => b.setAttribute("aria-pressed", String(j === k)));
    const side = run.directions[k];
    const sideSess = await session(side);
    holder.replaceChildren();
    await showDirection(holder, run, side, sideSess);
  }
  app.append(el("div", { class: "row direction", role: "group", "aria-label": "direction" },
    el("span", { text: "direction" }), ...buttons), holder);
  await pick(0);
}

// One generator: `side` is the run itself, or one of a CycleGAN run's `directions`.
async function showDirection(app, run, side, sess) {
  const L = side.layout;
  const run1 = serial(fail);
  const input = el("canvas", { class: "photo pair", id: `tr-input-${run.id}`, width: 1, height: 1 });
  const output = el("canvas", { class: "photo pair", id: `tr-output-${run.id}`, width: 1, height: 1 });
  const info = el("p", { class: "note", id: `tr-info-${run.id}` });
  const work = document.createElement("canvas"); // the image at its own size, whose pixels the model sees
  const wctx = work.getContext("2d", { willReadFrequently: true });

  async function translate(source, width, height) {
    work.width = width; work.height = height;
    wctx.clearRect(0, 0, width, height);
    wctx.drawImage(source, 0, 0, width, height);
    const planes = toPlanes(wctx.getImageData(0, 0, width, height).data, width, height, L.in_channels);
    // the input as the model sees it (after the channel conversion), beside its translation
    input.width = width; input.height = height;
    input.getContext("2d").putImageData(new ImageData(postprocess(Float32Array.from(planes, (v) => v / 127.5 - 1),
      L.in_channels, height, width, width, height), width, height), 0, 0);
    const { data, H, W } = preprocess(planes, width, height, L.in_channels, L.multiple);
    const out = await sess.run({ [L.input]: new ort.Tensor("float32", data, [1, L.in_channels, H, W]) });
    output.width = width; output.height = height;
    output.getContext("2d").putImageData(new ImageData(postprocess(out[sess.outputNames[0]].data, L.out_channels,
      H, W, width, height), width, height), 0, 0);
    info.textContent = `${width}×${height}, padded to ${W}×${H} (multiples of ${L.multiple}); ` +
      `${L.in_channels === 1 ? "grey" : "colour"} in, ${L.out_channels === 1 ? "grey" : "colour"} out`;
  }
  // run inside run1, one at a time; a file's EXIF orientation applied, as the decoder's exif_transpose;
  // the examples are the side this generator reads
  const { fromUrl, drop, examples } = pictureSources("tr", { id: run.id, examples: side.examples }, run1, translate,
    { imageOrientation: "from-image" });

  const controls = el("div", { class: "panel" },
    side.examples.length ? el("p", { text: `examples from side ${L.direction[0]} of the run's held-out split:` })
      : null, examples, drop,
    el("p", { class: "note", text: `${L.mode} ${L.direction}${L.data ? ` (trained on ${L.data})` : ""}: any size; ` +
      "sides are padded by repeating the edges " +
      "and cropped back, never stretched." }));
  const picture = el("div", { class: "panel" },
    el("div", { class: "pair-row" },
      el("figure", {}, input, el("figcaption", { text: "input" })),
      el("figure", {}, output, el("figcaption", { text: "translation" }))), info);
  app.append(el("div", { class: "layout" }, controls, picture));
  if (side.examples.length) await fromUrl(side.examples[0]);
}
