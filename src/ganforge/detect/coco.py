"""COCO instances JSON: ``images`` (id, file_name), ``annotations`` (image_id, category_id, bbox =
[x, y, w, h] pixels, iscrowd) and ``categories`` (id, name).

Categories are numbered 0..C-1 in ascending category id. A crowd region (``iscrowd`` = 1) is kept
as a `difficult` box: evaluation neither rewards nor punishes detections of it, as COCO ignores
crowds. `file_name` must stay inside the images folder. Every malformed entry is recorded with the
JSON's name and the entry's id, and left out.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from ganforge.detect.data import (DetectionSet, LabelIssues, Record, check_box, convert_box, image_size,
                                  make_record)
from ganforge.errors import DataError
from ganforge.io import write_json


def _categories(doc: dict, path: Path) -> tuple[dict[int, int], list[str]]:
    cats = doc.get("categories")
    if not isinstance(cats, list) or not cats or not all(
            isinstance(c, dict) and isinstance(c.get("id"), int) for c in cats):
        raise DataError(f"{path} has no usable 'categories' (a list of {{id, name}}): add them")
    ordered = sorted(cats, key=lambda c: c["id"])
    return {c["id"]: k for k, c in enumerate(ordered)}, [str(c.get("name", c["id"])) for c in ordered]


def _bbox(ann: dict) -> list[float] | None:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return None
    return convert_box([float(v) for v in bbox], "xywh")


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> DetectionSet:
    """The images and boxes of an instances JSON; images are looked up in `images_dir` (default:
    the JSON's folder)."""
    path = Path(json_path).expanduser()
    images_dir = Path(images_dir).expanduser() if images_dir is not None else path.parent
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}): check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}): fix or re-export it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path} is not a COCO instances file (no 'images' list)")
    index, names = _categories(doc, path)
    issues = LabelIssues()
    by_image: dict[object, list[dict]] = defaultdict(list)
    for ann in doc.get("annotations") or []:
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
        else:
            issues.add(path, "malformed annotation: not an object")
    records: list[Record] = []
    root = images_dir.resolve()
    for entry in doc["images"]:
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            issues.add(path, f"malformed image entry: {str(entry)[:60]}")
            continue
        image = images_dir / name
        if not image.resolve().is_relative_to(root):
            issues.add(f"{path}:image {entry.get('id')}",
                       f"malformed image entry: {name!r} leaves {images_dir}")
            continue
        size = image_size(image, issues)
        if size is None:
            continue
        boxes, labels, difficult = [], [], []
        for ann in by_image.get(entry.get("id"), []):
            where = f"{path}:annotation {ann.get('id')}"
            if ann.get("category_id") not in index:
                issues.add(where, f"class id out of range: category {ann.get('category_id')!r}")
                continue
            box = _bbox(ann)
            if box is None:
                issues.add(where, "malformed annotation: bbox is not [x, y, w, h] numbers")
                continue
            box, reason = check_box(box, size)
            if reason:
                issues.add(where, reason)
                continue
            boxes.append(box)
            labels.append(index[ann["category_id"]])
            difficult.append(bool(ann.get("iscrowd", 0)))
        records.append(make_record(image, size, boxes, labels, difficult))
    return DetectionSet(f"coco:{path}", names, records, issues, source=str(path))


def write_coco(path: Path, records: list[Record], file_names: list[str], names: list[str]) -> None:
    """An instances JSON for `records` (category ids 1..C, as COCO numbers them)."""
    images, annotations = [], []
    for i, (record, name) in enumerate(zip(records, file_names), 1):
        height, width = record.size
        images.append({"id": i, "file_name": name, "width": width, "height": height})
        for box, c, d in zip(record.boxes.tolist(), record.labels.tolist(), record.difficult.tolist()):
            x, y, w, h = convert_box(box, "xyxy", "xywh")
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": c + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(d)})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    write_json(path, {"images": images, "annotations": annotations, "categories": categories})
