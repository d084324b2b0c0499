// Where a page's picture comes from: an example button, a chosen file or a dropped one. The
// detector's and the translator's pages share it, so both take images the same way.
import { el, fail } from "./page.js";

// `prefix` starts the elements' ids (det, tr); `run1` is the page's queue (page.js serial) and
// `work(source, width, height)` runs the model on a decoded picture; `bitmap` holds
// createImageBitmap's options for a file (e.g. its EXIF orientation).
// Returns fromUrl (shows one picture), the drop zone with its file input, and the example buttons.
export function pictureSources(prefix, run, run1, work, bitmap = {}) {
  // Decoding is queued with the inference, so the page is busy (gfIdle waits) from the click on.
  function fromUrl(url) {
    run1(async () => {
      const img = new Image();
      img.src = url;
      await img.decode();
      await work(img, img.naturalWidth, img.naturalHeight);
    });
    return Promise.resolve();
  }
  function fromFile(file) {
    if (!file || !file.type.startsWith("image/")) return Promise.resolve(fail("that is not an image file"));
    run1(async () => {
      const decoded = await createImageBitmap(file, bitmap);
      await work(decoded, decoded.width, decoded.height);
    });
    return Promise.resolve();
  }

  const file = el("input", { type: "file", accept: "image/*", id: `${prefix}-file-${run.id}` });
  file.addEventListener("change", () => fromFile(file.files[0]).catch(fail));
  const drop = el("div", { class: "drop", id: `${prefix}-drop-${run.id}` }, "drop an image here, or ", file);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); fromFile(e.dataTransfer.files[0]).catch(fail); });
  const examples = el("div", { class: "examples" }, ...run.examples.map((url, i) => el("button",
    { type: "button", id: `${prefix}-example-${run.id}-${i}`, title: `example ${i + 1}`, onclick: () => fromUrl(url).catch(fail) },
    el("img", { src: url, alt: `example ${i + 1}` }))));
  return { fromUrl, drop, examples };
}
