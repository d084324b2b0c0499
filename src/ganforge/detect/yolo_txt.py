"""The Ultralytics layout: a data YAML, ``images/`` <-> ``labels/`` and YOLO txt labels.

The YAML holds ``path`` (the dataset root; relative to the YAML's folder), ``train``, ``val``,
optional ``test`` (each a folder of images, a .txt list of image paths, or a list of those, relative
to ``path``) and ``names`` (a list, or a mapping from class id to name). The label file of
``.../images/.../a.jpg`` is ``.../labels/.../a.txt`` (the last ``images`` folder is swapped for
``labels``); one line per box, ``class xc yc w h`` with coordinates normalised by the image's width
and height. An image without a label file is a background image.
"""

from __future__ import annotations

import math
from pathlib import Path

from ganforge.detect.data import (IMAGE_SUFFIXES, DetectionSet, LabelIssues, Record, check_box,
                                  convert_box, image_size, make_record)
from ganforge.documents import load_yaml
from ganforge.errors import DataError
from ganforge.io import atomic_write_text

SPLITS = ("train", "val", "test")


def label_path(image: Path) -> Path:
    """The label file of an image: the last 'images' folder becomes 'labels', the suffix '.txt'."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_labels(path: Path, size: tuple[int, int], num_classes: int, issues: LabelIssues,
                 ) -> tuple[list[list[float]], list[int]]:
    """Boxes (xyxy pixels) and labels of one label file; bad lines are recorded and skipped."""
    height, width = size
    boxes, labels = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        issues.add(path, f"unreadable label file: {type(exc).__name__}")
        return boxes, labels
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            issues.add(where, f"malformed line: expected 'class xc yc w h', got {len(fields)} fields")
            continue
        try:
            cls_f, xc, yc, w, h = (float(v) for v in fields)
        except ValueError:
            issues.add(where, "malformed line: not numbers")
            continue
        if not all(math.isfinite(v) for v in (cls_f, xc, yc, w, h)):
            issues.add(where, "malformed line: a value is not a finite number")
            continue
        if cls_f != int(cls_f) or not 0 <= int(cls_f) < num_classes:
            issues.add(where, f"class id out of range: {fields[0]} not in 0..{num_classes - 1}")
            continue
        box, reason = check_box(convert_box([xc * width, yc * height, w * width, h * height], "cxcywh"),
                                size)
        if reason:
            issues.add(where, reason)
            continue
        boxes.append(box)
        labels.append(int(cls_f))
    return boxes, labels


def list_images(entry: Path) -> list[Path]:
    """Images of a split entry: a folder (recursively) or a .txt file of image paths."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if entry.suffix == ".txt" and entry.is_file():
        base = entry.parent
        lines = [ln.strip() for ln in entry.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [(base / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    raise DataError(f"{entry} does not exist: fix the split's path in the data YAML "
                    "(relative to its 'path')")


def orphan_labels(folders: list[Path], images: list[Path]) -> list[Path]:
    """Label files in the label folders of image `folders` that belong to none of `images` (an
    image deleted or renamed, or given another suffix than the listing knows). LabelImg's
    ``classes.txt`` is not a label file."""
    expected = {label_path(image) for image in images}
    found: set[Path] = set()
    for folder in folders:
        labels = label_path(folder / "x").parent
        if labels != folder and labels.is_dir():
            found.update(p for p in labels.rglob("*.txt") if p.name != "classes.txt" and p.is_file())
    return sorted(found - expected)


def read_names(config: dict, where: Path) -> list[str]:
    """Class names from a YAML's `names` (a list, or a mapping id -> name with ids 0..n-1). Each
    name is a non-empty string (a number is taken as its text), and no two are the same."""
    names = config.get("names")
    if isinstance(names, dict) and names and all(isinstance(k, int) and not isinstance(k, bool)
                                                 for k in names):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(names) - 1}: renumber them")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{where} has no 'names': add a list of class names, e.g. names: [cat, dog]")
    for k, name in enumerate(names):
        if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
            shown = "null" if name is None else type(name).__name__ if isinstance(name, (list, dict)) else repr(name)
            raise DataError(f"{where}: class name {k} is {shown}, not a name: give each class a plain "
                            "name, e.g. names: [cat, dog]")
    first: dict[str, int] = {}
    for k, name in enumerate(map(str, names)):
        if name in first:
            raise DataError(f"{where}: classes {first[name]} and {k} are both named {name!r}: "
                            "give each class its own name")
        first[name] = k
    return [str(n) for n in names]


def load_yaml_config(path: Path) -> tuple[dict, Path, list[str]]:
    """(the YAML mapping, the dataset root, the class names); one-line errors for what is wrong."""
    config = load_yaml(path, "data YAML")
    if not isinstance(config, dict):
        raise DataError(f"{path} is not a data YAML (a mapping with path, train, val, names)")
    names = read_names(config, path)
    root = Path(str(config.get("path") or "."))
    root = (path.parent / root.expanduser()) if not root.expanduser().is_absolute() else root
    if not root.is_dir():
        raise DataError(f"{path}: its 'path' {root} is not a folder: fix 'path' (relative to the YAML)")
    return config, root, names


def load_split(config: dict, root: Path, names: list[str], split: str, where: Path) -> DetectionSet:
    """One split of an Ultralytics dataset."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    entries = config.get(split)
    if not entries:
        raise DataError(f"{where} has no '{split}' split: add '{split}: images/{split}'")
    images: list[Path] = []
    folders: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        images += list_images(root / str(entry))
        if (root / str(entry)).is_dir():
            folders.append(root / str(entry))
    issues = LabelIssues()
    for orphan in orphan_labels(folders, images):
        issues.add(orphan, "label file without an image: its boxes are not used")
    records: list[Record] = []
    for image in images:
        size = image_size(image, issues)
        if size is None:
            continue
        labels_file = label_path(image)
        boxes, labels = ([], []) if not labels_file.is_file() else parse_labels(
            labels_file, size, len(names), issues)
        records.append(make_record(image, size, boxes, labels))
    return DetectionSet(f"yolo:{where}", names, records, issues, source=f"{where} [{split}]")


def load_yolo(path: str | Path, split: str = "train") -> DetectionSet:
    """A split of the dataset a data YAML describes."""
    path = Path(path).expanduser()
    config, root, names = load_yaml_config(path)
    return load_split(config, root, names, split, path)


def write_labels(path: Path, record: Record) -> None:
    """One YOLO txt label file (normalised centres; 8 significant digits, exact for our canvases)."""
    height, width = record.size
    lines = []
    for box, c in zip(record.boxes.tolist(), record.labels.tolist()):
        xc, yc, w, h = convert_box(box, "xyxy", "cxcywh")
        lines.append(f"{c} {xc / width:.8g} {yc / height:.8g} {w / width:.8g} {h / height:.8g}")
    atomic_write_text(path, "".join(line + "\n" for line in lines))
