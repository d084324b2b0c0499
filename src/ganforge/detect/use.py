"""Using a trained detector: load it from its run folder, score it on a split (`detect val`) and
run it over image files (`detect predict`), writing drawn boxes, YOLO txt and JSON per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import write_png
from torchvision.transforms.v2 import functional as F

from ganforge.checkpoint import build_for_state, load_checkpoint, load_latest, module_state
from ganforge.data.decode import image_problem
from ganforge.detect.config import DetectConfig
from ganforge.detect.data import BAD_IMAGE_ERRORS, IMAGE_SUFFIXES, read_image
from ganforge.detect.draw import draw_detections
from ganforge.detect.evaluate import to_input
from ganforge.detect.infer import postprocess
from ganforge.detect.model import YoloV1
from ganforge.detect.run import net_builder
from ganforge.device import resolve_device
from ganforge.errors import CheckpointError, ConfigError, DataError
from ganforge.io import atomic_write_text, display_path, write_json


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
    root = run / "checkpoints"
    if checkpoint:
        path = Path(checkpoint) if Path(checkpoint).is_dir() else root / checkpoint
        if not path.is_dir():
            raise CheckpointError(f"no checkpoint {checkpoint!r} in {display_path(root)}: use a name there "
                                  "(e.g. best) or a checkpoint folder")
        tensors, meta = load_checkpoint(path)
    else:
        path, tensors, meta = load_latest(root, purpose="using")
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


def image_files(source: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (sorted; not recursive)."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{display_path(path)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    raise DataError(f"--source {display_path(path)} does not exist: give an image file or a folder of images")


@torch.no_grad()
def predict_files(model: TrainedDetector, files: list[Path], out: Path, *, conf: float, iou: float,
                  log=print) -> dict:
    """Detect in each file and write OUT/<stem>.png (boxes drawn), <stem>.txt (YOLO: class xc yc w h
    score, normalised) and <stem>.json (boxes in the image's pixels). Returns counts."""
    out.mkdir(parents=True, exist_ok=True)
    net = model.net
    device = next(net.parameters()).device
    size = net.input_size
    written, unreadable, boxes = 0, [], 0
    for path in files:
        try:
            image = read_image(path)
        except BAD_IMAGE_ERRORS as exc:
            unreadable.append(path.name)
            log(f"warning: {display_path(path)} could not be read ({image_problem(exc)}): skipped")
            continue
        height, width = image.shape[-2:]
        x = F.resize(image, [size, size], antialias=True).unsqueeze(0)
        raw = net(to_input(x.to(device), model.channels_last))
        det = {k: v.cpu() for k, v in postprocess(raw, [(height, width)], net.boxes, conf=conf, iou=iou)[0].items()}
        write_png(draw_detections(image, det, model.names), str(out / f"{path.stem}.png"))
        lines, items = [], []
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                  det["labels"].tolist()):
            lines.append(f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                         f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f} {score:.6f}")
            items.append({"class": label, "name": model.names[label], "score": round(score, 6),
                          "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)]})
        atomic_write_text(out / f"{path.stem}.txt", "".join(line + "\n" for line in lines))
        write_json(out / f"{path.stem}.json", {"image": path.name, "width": width, "height": height,
                                               "detections": items})
        written += 1
        boxes += len(items)
    return {"images": written, "boxes": boxes, "unreadable": unreadable}


def val_json_path(run_dir: Path, split: str, metric: str) -> Path:
    return run_dir / f"val-{split}-{metric}.json"
