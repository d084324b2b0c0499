"""Write detection splits as an Ultralytics dataset, a VOC folder or COCO JSON (images as PNG).

Image files are named ``<split>_<index>.png`` in every layout, so the same scene has the same name
in all three and a VOC folder can hold every split in its one ``JPEGImages/``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from ganforge.detect.coco import write_coco
from ganforge.detect.data import DetectionSet
from ganforge.detect.voc import NAMES_FILE, write_annotation
from ganforge.detect.yolo_txt import write_labels
from ganforge.errors import ConfigError
from ganforge.io import atomic_write_text, atomic_writer

FORMATS = ("yolo", "voc", "coco")


def _save_png(dataset: DetectionSet, i: int, path: Path) -> None:
    with atomic_writer(path) as tmp:
        Image.fromarray(dataset.image(i).permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _stems(split: str, dataset: DetectionSet) -> list[str]:
    return [f"{split}_{i:06d}" for i in range(len(dataset))]


def write_yolo_dataset(splits: dict[str, DetectionSet], root: Path) -> Path:
    """images/<split>/*.png, labels/<split>/*.txt and data.yaml; returns the YAML's path."""
    for split, dataset in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, stem in enumerate(_stems(split, dataset)):
            _save_png(dataset, i, root / "images" / split / f"{stem}.png")
            if len(dataset.records[i].labels):  # no label file: a background image
                write_labels(root / "labels" / split / f"{stem}.txt", dataset.records[i])
    names = next(iter(splits.values())).names
    config = {"path": ".", **{s: f"images/{s}" for s in splits}, "names": dict(enumerate(names))}
    return atomic_write_text(root / "data.yaml", yaml.safe_dump(config, sort_keys=False))


def write_voc_dataset(splits: dict[str, DetectionSet], root: Path) -> Path:
    """Annotations/, JPEGImages/ (PNG files), ImageSets/Main/<split>.txt and names.txt."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, dataset in splits.items():
        stems = _stems(split, dataset)
        for i, stem in enumerate(stems):
            _save_png(dataset, i, root / "JPEGImages" / f"{stem}.png")
            write_annotation(root / "Annotations" / f"{stem}.xml", dataset.records[i], f"{stem}.png",
                             dataset.names)
        _write_lines(root / "ImageSets" / "Main" / f"{split}.txt", stems)
    _write_lines(root / NAMES_FILE, next(iter(splits.values())).names)
    return root


def write_coco_dataset(splits: dict[str, DetectionSet], root: Path) -> Path:
    """annotations/instances_<split>.json and images/<split>/*.png."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, dataset in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        names = [f"{stem}.png" for stem in _stems(split, dataset)]
        for i, name in enumerate(names):
            _save_png(dataset, i, root / "images" / split / name)
        write_coco(root / "annotations" / f"instances_{split}.json", dataset.records, names, dataset.names)
    return root


WRITERS = {"yolo": write_yolo_dataset, "voc": write_voc_dataset, "coco": write_coco_dataset}


def write_dataset(splits: dict[str, DetectionSet], root: str | Path, fmt: str) -> Path:
    """Write `splits` (split name -> set) under `root` in format `fmt` (yolo, voc or coco)."""
    if fmt not in WRITERS:
        raise ConfigError(f"unknown dataset format {fmt!r}; valid: {', '.join(FORMATS)}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return WRITERS[fmt](splits, root)
