"""Using a trained detector: load it from its run folder (or wrap an exported one) as a `Trained`,
score it on a split (`detect val`) and run it over image files (`detect predict`), writing drawn
boxes, YOLO txt and JSON per image."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from ganforge.checkpoint import build_for_state, load_named, module_state
from ganforge.data.decode import image_problem
from ganforge.detect.config import DetectConfig
from ganforge.detect.data import BAD_IMAGE_ERRORS, read_image
from ganforge.detect.draw import draw_detections
from ganforge.detect.evaluate import to_input
from ganforge.detect.infer import DRAW_CONF, EVAL_CONF, MAX_DETECTIONS, NMS_IOU, postprocess
from ganforge.detect.model import YoloV1
from ganforge.detect.run import net_builder
from ganforge.device import resolve_device
from ganforge.errors import ConfigError
from ganforge.io import atomic_write_bytes, atomic_write_text, display_path, write_json
from ganforge.outputs import OutputFolder, check_file, distinct_stems, json_with, run_record
from ganforge.trained import Trained


@dataclass
class TrainedDetector:
    net: YoloV1
    cfg: DetectConfig
    names: list[str]
    checkpoint: Path
    step: int
    channels_last: bool


def load_detector(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> TrainedDetector:
    """The network of a run folder at its latest checkpoint, or `checkpoint` (a name in
    RUN/checkpoints such as `best`, or a checkpoint folder), in inference mode."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{display_path(run)} is not a folder: give a run folder that "
                          "`ganforge detect train` wrote")
    path, tensors, meta = load_named(run / "checkpoints", checkpoint)
    config = meta.get("config", {})
    if config.get("task") != "detect":
        if config.get("task") in (None, "gan") and "latent_dim" in config:  # the GAN's config has no task key
            raise ConfigError(f"{display_path(run)} is a GAN run, not a detector run: detect val and predict "
                              f"need a detector; use `ganforge sample`, `eval` or `explore` on it, or give a "
                              "folder that `ganforge detect train` wrote")
        raise ConfigError(f"{display_path(run)} is not a detector run (it has no detector config): give a "
                          "folder that `ganforge detect train` wrote")
    cfg = DetectConfig.from_dict(config)
    names = list(meta["names"])
    net = build_for_state(net_builder(cfg, len(names)), module_state(tensors, "net"), display_path(path))
    dev = resolve_device(device)
    net.to(dev).eval()
    channels_last = bool(meta.get("channels_last", False))
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return TrainedDetector(net, cfg, names, path, int(meta.get("step", 0)), channels_last)


def preprocess(images: list[torch.Tensor], input_size: int, channels_last: bool = False) -> tuple[torch.Tensor]:
    """uint8 3 x H x W images of any sizes -> the network's N x 3 x S x S input: a plain resize to
    its square side (no letterbox, as in training), then [0, 1]."""
    x = torch.stack([F.resize(image, [input_size, input_size], antialias=True) for image in images])
    return (to_input(x, channels_last),)


def image_sizes(images: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [tuple(image.shape[-2:]) for image in images]


def _trained(net: YoloV1, cfg: DetectConfig, names: list[str], meta: dict, channels_last: bool,
             source: Path | None, runtime: str = "pytorch") -> Trained:
    size = net.input_size

    def pre(images: list[torch.Tensor]) -> tuple[torch.Tensor]:
        return preprocess(images, size, channels_last)

    def post(raw: torch.Tensor, sizes: list[tuple[int, int]], conf: float = DRAW_CONF, iou: float = NMS_IOU):
        return postprocess(raw, sizes, net.boxes, conf=conf, iou=iou)

    example = (torch.zeros(1, 3, size, size),)
    return Trained("detect", net, cfg, example, pre, post, meta, source, runtime)


def detector_meta(net: YoloV1, cfg: DetectConfig, names: list[str], checkpoint: str, step: int) -> dict:
    """What a file needs to be used without ganforge's run folder (docs/EXPORT.md)."""
    return {"task": "detect", "model": cfg.model, "config": cfg.to_dict(), "checkpoint": checkpoint, "step": step,
            "channels": 3, "image_size": net.input_size, "pixel_range": "01",
            "normalization": "x / 255 after a bilinear antialiased resize to image_size (no letterbox)",
            "input_names": ["images"], "output_name": "grid", "class_names": list(names), "grid": net.grid,
            "boxes": net.boxes, "num_classes": net.num_classes,
            "output_layout": "N x S x S x (5B + C): per cell [x, y, sqrt(w), sqrt(h), confidence] * B, "
                             "then C class scores",
            "postprocess": {"conf": DRAW_CONF, "eval_conf": EVAL_CONF, "iou": NMS_IOU, "max_det": MAX_DETECTIONS,
                            "score": "class score x box confidence, per-class NMS"}}


def from_net(net: YoloV1, cfg: DetectConfig, names: list[str], *, checkpoint: str = "", step: int = 0) -> Trained:
    """A detector network in memory (eval mode) as a `Trained`."""
    return _trained(net.eval(), cfg, names, detector_meta(net, cfg, names, checkpoint, step), False, None)


def load_trained(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> Trained:
    """A detector run as a `Trained`: the network, `preprocess(images)` and
    `postprocess(raw, sizes, conf=, iou=)`, and the meta an export carries."""
    model = load_detector(run_dir, checkpoint, device)
    meta = detector_meta(model.net, model.cfg, model.names, model.checkpoint.name, model.step)
    meta["channels_last"] = model.channels_last  # how this PyTorch net is fed; an export is plain NCHW
    return _trained(model.net, model.cfg, model.names, meta, model.channels_last, model.checkpoint)


def wrap_exported(module, meta: dict, runtime: str, source: Path) -> Trained:
    """An exported detector (ONNX Runtime or TorchScript behind `module`) with the same pre- and
    post-processing as its run."""
    module.input_size, module.grid = int(meta["image_size"]), int(meta["grid"])
    module.boxes, module.num_classes = int(meta["boxes"]), int(meta["num_classes"])
    cfg = DetectConfig.from_dict(meta["config"])
    return _trained(module, cfg, list(meta["class_names"]), meta, False, source, runtime)


def detect_images(model: Trained, images: list[torch.Tensor], *, conf: float, iou: float) -> list[dict]:
    """Detections (CPU tensors, in each image's own pixels) for uint8 images of any sizes."""
    raw = model(*(x.to(model.device) for x in model.preprocess(images)))
    return [{k: v.cpu() for k, v in d.items()}
            for d in model.postprocess(raw, image_sizes(images), conf=conf, iou=iou)]


def detection_records(det: dict, names: list[str], width: int, height: int) -> tuple[list[str], list[dict]]:
    """YOLO txt lines (class xc yc w h score, normalised) and JSON items (pixels) of one image."""
    lines, items = [], []
    for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                              det["labels"].tolist()):
        lines.append(f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f} {score:.6f}")
        items.append({"class": label, "name": names[label], "score": round(score, 6),
                      "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)]})
    return lines, items


def _inputs(run_dir: str | Path | None, model: str | Path | None) -> list[Path]:
    return [*(run_record(run_dir) if run_dir else []), *([Path(model)] if model else [])]


def predict_output(run_dir: str | Path | None, source: str | Path | None, out: str | Path, force: bool = False,
                   model: str | Path | None = None) -> OutputFolder:
    """`detect predict`'s --out, checked before the model loads: never the source or anything in
    it, never an entry of the run folder or the exported model, never a folder of files ganforge
    did not write."""
    sources = [Path(source)] if source is not None else []  # a camera or a stream has no path
    return OutputFolder(out, "detect predict", inputs=[*sources, *_inputs(run_dir, model)], force=force).check()


def predict_files(model: Trained, files: list[Path], out: OutputFolder, *, conf: float, iou: float,
                  log=print) -> dict:
    """Detect in each file and write into `out` (checked and opened by the caller) <name>.png (boxes
    drawn), <name>.txt (YOLO: class xc yc w h score, normalised) and <name>.json (boxes in the
    image's pixels), where <name> is the file's stem, or its whole name when two sources share a
    stem (`a.jpg`, `a.png`). Returns counts."""
    names = model.meta["class_names"]
    written, unreadable, boxes = 0, [], 0
    for path, name in zip(files, distinct_stems(files)):
        try:
            image = read_image(path)
        except BAD_IMAGE_ERRORS as exc:
            unreadable.append(path.name)
            log(f"warning: {display_path(path)} could not be read ({image_problem(exc)}): skipped")
            continue
        height, width = image.shape[-2:]
        det = detect_images(model, [image], conf=conf, iou=iou)[0]
        lines, items = detection_records(det, names, width, height)
        drawn = io.BytesIO()
        picture = draw_detections(image, det, names).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(picture).save(drawn, format="PNG")
        atomic_write_bytes(out.target(f"{name}.png"), drawn.getvalue())
        atomic_write_text(out.target(f"{name}.txt"), "".join(line + "\n" for line in lines))
        write_json(out.target(f"{name}.json"), {"image": path.name, "width": width, "height": height,
                                                "detections": items})
        written += 1
        boxes += len(items)
    return {"images": written, "boxes": boxes, "unreadable": unreadable}


def val_json_path(run_dir: str | Path | None, split: str, metric: str, given: str | None = None,
                  force: bool = False, model: str | Path | None = None) -> Path:
    """Where `detect val` writes its result: `given`, or RUN/val-SPLIT-METRIC.json; checked before
    anything slow never to be an entry of the run folder or the exported model, nor a file ganforge
    did not write."""
    if run_dir is None and not given:
        raise ConfigError("with --model, say where the result goes: --json FILE")
    own = f"val-{split}-{metric}.json"
    out = Path(given) if given else Path(run_dir) / own
    inputs = [p for p in _inputs(run_dir, model) if not p.name.startswith("val-")]
    return check_file(out, inputs=inputs, ours=json_with("metric", "map"), force=force, flag="--json")


def examples(run_dir: Path, n: int = 4) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Up to `n` images of the run's validation split as PNG bytes (made in memory, never written)."""
    import json

    from ganforge.detect.datasets import open_detection_data
    from ganforge.io import first_line

    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    try:
        data = open_detection_data(config["data"], "val")
    except Exception as err:  # noqa: BLE001 - no examples is a note, not a failure: the page takes any image
        return [], [f"note: no example images for {display_path(run_dir)}: its val split cannot be read "
                    f"({first_line(err)})"]
    out = []
    for i in range(min(n, len(data))):
        image, _ = data[i]
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        out.append((f"{i}.png", buf.getvalue()))
    return out, []
