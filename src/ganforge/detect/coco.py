"""COCO instances JSON: ``images`` (id, file_name), ``annotations`` (image_id, category_id, bbox =
[x, y, w, h] pixels, iscrowd) and ``categories`` (id, name).

Categories are numbered 0..C-1 in ascending category id. A crowd region (``iscrowd`` = 1) is kept
as a `difficult` box: evaluation neither rewards nor punishes detections of it, as COCO ignores
crowds. `file_name` must stay inside the images folder. Every malformed entry is recorded with the
JSON's name and the entry's id (or its place in its list when the id itself is unusable), and left
out. Image and category ids are integers (image ids may be strings); ``true`` is not an id, and
``iscrowd`` is 0 or 1. An image id given to two images leaves both out, as their boxes cannot be
told apart; a category id given twice leaves its boxes out.
"""

from __future__ import annotations

import math
import reprlib
from collections import defaultdict
from pathlib import Path

from ganforge.detect.data import (DetectionSet, LabelIssues, Record, check_box, convert_box, image_size,
                                  make_record)
from ganforge.documents import load_json
from ganforge.errors import DataError
from ganforge.io import write_json


def _is_id(value: object) -> bool:
    """A usable COCO id: an integer (not true/false, which JSON would let pass as 1/0) or a string."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _categories(doc: dict, path: Path, issues: LabelIssues) -> tuple[dict[object, int], list[str], set]:
    """(category id -> class index, class names, ids that two categories share). Categories are
    numbered in ascending id; a malformed or repeated one is recorded and left out."""
    cats = doc.get("categories")
    usable: dict[object, str] = {}
    shared: set = set()
    for k, cat in enumerate(cats if isinstance(cats, list) else []):
        ident = cat.get("id") if isinstance(cat, dict) else None
        if not isinstance(ident, int) or isinstance(ident, bool):
            issues.add(f"{path}:categories[{k}]", f"malformed category: id {reprlib.repr(ident)} is not a number")
            continue
        name = cat.get("name", ident)
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            issues.add(f"{path}:category {ident}", f"malformed category: name {reprlib.repr(name)} is not a name")
            continue
        if ident in usable:
            issues.add(f"{path}:category {ident}", f"duplicate category id: {ident} is both "
                       f"{usable[ident]!r} and {str(name)!r}; its annotations are left out")
            shared.add(ident)
            continue
        usable[ident] = str(name)
    if not usable:
        raise DataError(f"{path} has no usable 'categories' (a list of {{id, name}}): add them")
    ordered = sorted(usable)
    names = [usable[i] for i in ordered]
    for name in {n for n in names if names.count(n) > 1}:
        issues.add(f"{path}:categories", f"duplicate category name: {name!r} names "
                   f"{names.count(name)} categories; they stay separate classes")
    return {i: k for k, i in enumerate(ordered)}, names, shared


def _bbox(ann: dict) -> list[float] | None:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
        return None
    return convert_box([float(v) for v in bbox], "xywh")


def _images(doc: dict, path: Path, images_dir: Path, issues: LabelIssues) -> dict[object, Path]:
    """image id -> file, for the entries that are usable; an id that two entries share is left out
    with both (which image its boxes belong to cannot be known), and so is a file listed twice."""
    root = images_dir.resolve()
    by_id: dict[object, Path] = {}
    repeated: set = set()
    files: set[Path] = set()
    for k, entry in enumerate(doc["images"]):
        ident = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not _is_id(ident):
            issues.add(f"{path}:images[{k}]", f"malformed image entry: id {reprlib.repr(ident)} is not an id")
            continue
        where = f"{path}:image {ident}"
        if not isinstance(name, str) or not name:
            issues.add(where, f"malformed image entry: file_name {reprlib.repr(name)} is not a file name")
            continue
        image = images_dir / name
        if not image.resolve().is_relative_to(root):
            issues.add(where, f"malformed image entry: {name!r} leaves {images_dir}")
            continue
        if ident in by_id or ident in repeated:
            issues.add(where, f"duplicate image id: {ident!r} is given to more than one image "
                       "(all of them are left out: their boxes cannot be told apart)")
            repeated.add(ident)
            by_id.pop(ident, None)
            continue
        if image in files:
            issues.add(where, f"duplicate image entry: {name!r} is listed twice; the first is used")
            continue
        files.add(image)
        by_id[ident] = image
    return by_id


def _crowd(ann: dict) -> bool | None:
    """`iscrowd` as a flag: 0 or 1 (false/true too); None for anything else ("no", 2, 0.5)."""
    flag = ann.get("iscrowd", 0)
    return bool(flag) if flag in (0, 1) and isinstance(flag, (int, bool)) else None


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> DetectionSet:
    """The images and boxes of an instances JSON; images are looked up in `images_dir` (default:
    the JSON's folder)."""
    path = Path(json_path).expanduser()
    images_dir = Path(images_dir).expanduser() if images_dir is not None else path.parent
    doc = load_json(path, "COCO JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path} is not a COCO instances file (no 'images' list)")
    issues = LabelIssues()
    index, names, shared = _categories(doc, path, issues)
    files = _images(doc, path, images_dir, issues)
    anns = doc.get("annotations") or []
    by_image: dict[object, list[tuple[str, dict]]] = defaultdict(list)
    for k, ann in enumerate(anns if isinstance(anns, list) else [anns]):
        ident = ann.get("id") if isinstance(ann, dict) else None
        where = f"{path}:annotation {ident}" if _is_id(ident) else f"{path}:annotations[{k}]"
        if not isinstance(ann, dict):
            issues.add(where, "malformed annotation: not an object")
        elif not _is_id(ann.get("image_id")):
            issues.add(where, f"malformed annotation: image_id {reprlib.repr(ann.get('image_id'))} is not an id")
        elif ann["image_id"] not in files:
            issues.add(where, f"annotation of no image: image_id {ann['image_id']!r} is not a usable image")
        else:
            by_image[ann["image_id"]].append((where, ann))
    records: list[Record] = []
    for ident, image in files.items():
        size = image_size(image, issues)
        if size is None:
            continue
        boxes, labels, difficult = [], [], []
        for where, ann in by_image.get(ident, []):
            category = ann.get("category_id")
            if not isinstance(category, int) or isinstance(category, bool) or category not in index:
                issues.add(where, f"class id out of range: category {reprlib.repr(category)}")
                continue
            if category in shared:
                issues.add(where, f"ambiguous class: category {category} is defined twice")
                continue
            crowd = _crowd(ann)
            if crowd is None:
                issues.add(where, f"malformed annotation: iscrowd {reprlib.repr(ann.get('iscrowd'))} is not 0 or 1")
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
            labels.append(index[category])
            difficult.append(crowd)
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
