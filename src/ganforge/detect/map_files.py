"""What `ganforge detect map` scores: folders of per-image files in one of three layouts, read
strictly, so that a file read in the wrong layout is refused and never scored.

- ``pixels``: the Object-Detection-Metrics files of `odm.py` (``class left top width height`` and
  ``class confidence left top width height``, or corners with ``--format xyxy``), inclusive pixels;
- ``yolo``: YOLO txt, normalised by the image's size: truth ``class xc yc w h`` (a YOLO label
  folder), detections ``class xc yc w h score`` (what ``detect predict`` writes). The image sizes
  come from ``--images`` (files with the same stem) or from ``detect predict``'s JSON beside them;
  as in a YOLO dataset, an image without a label file is an image without objects;
- ``ganforge``: ``detect predict``'s ``<name>.json`` (boxes in pixels, with the image's size).

``auto`` (the default) picks the layout of each side from the files: ganforge JSON when the
detections are a ``detect predict`` folder; YOLO when every coordinate lies in [0, 1] and every class
is an integer id; pixels when some coordinate is beyond 1 (a normalised box cannot be). Any other mix
is ambiguous and refused with the flag that settles it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ganforge.detect.data import IMAGE_SUFFIXES, LabelIssues, convert_box, image_size
from ganforge.detect.odm import read_folder
from ganforge.detect.yolo_txt import parse_labels
from ganforge.errors import DataError
from ganforge.io import display_path
from ganforge.outputs import MARKER

LAYOUTS = ("auto", "pixels", "yolo", "ganforge")
MAX_PIXELS = 1e6  # a coordinate beyond a million pixels is an overflow, not a box
EDGE = 0.005  # a normalised coordinate may pass 0 or 1 by this much (the loader's tolerance)


@dataclass
class Scored:
    """Both sides, aligned by image, ready for `voc_eval.evaluate`."""

    preds: list[dict]
    truths: list[dict]
    names: list[str]
    layouts: tuple[str, str]  # (truth, detections)
    plus_one: bool  # inclusive pixel corners (the pixels layout): VOC metrics add the pixel
    warnings: list[str] = field(default_factory=list)


def _txt_rows(folder: Path) -> dict[str, list[list[str]]]:
    rows = {}
    for path in sorted(folder.glob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {display_path(path)} ({type(exc).__name__}): fix or remove it") from None
        rows[path.stem] = [line.split() for line in text.splitlines() if line.strip()]
    return rows


def _is_predict_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text().splitlines()[0]).get("command") == "detect predict"
    except (OSError, ValueError, IndexError, AttributeError):
        return False


def detect_layout(folder: Path, detections: bool) -> str:
    """The layout of a folder of .txt files (see the module's rules), or a one-line refusal."""
    if detections and _is_predict_folder(folder):
        return "yolo"  # its txt files, with the sizes from its JSON
    rows = [r for rs in _txt_rows(folder).values() for r in rs]
    if not rows:
        return "yolo" if detections and any(folder.glob("*.json")) else "pixels"  # nothing to misread
    coords = slice(1, 5)
    try:
        values = [float(v) for r in rows for v in r[coords]]
    except ValueError:
        return "pixels"  # not numbers where YOLO has them: the pixel reader names the line
    integer_ids = all(r[0].isdigit() for r in rows)
    if integer_ids and all(-EDGE <= v <= 1 + EDGE for v in values):
        return "yolo"
    if any(abs(v) > 1 + EDGE for v in values):
        return "pixels"
    side = "--pred" if detections else "--gt"
    raise DataError(f"{side} {display_path(folder)}: cannot tell whether its boxes are pixels or normalised YOLO "
                    "(every coordinate is within [0, 1] but a class is not an id): pass --layout pixels or yolo")


def _image_sizes(images: Path | None, pred: Path) -> dict[str, tuple[int, int]]:
    """stem -> (height, width): from --images, else from `detect predict`'s JSON files."""
    sizes: dict[str, tuple[int, int]] = {}
    if images is not None:
        if not images.is_dir():
            raise DataError(f"--images {display_path(images)} is not a folder: give the folder of the images")
        issues = LabelIssues()
        for path in sorted(images.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                size = image_size(path, issues)
                if size is not None:
                    sizes.setdefault(path.stem, size)
        return sizes
    for stem, doc in _predict_json(pred).items():
        sizes[stem] = (doc["height"], doc["width"])
    return sizes


def _predict_json(folder: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(folder.glob("*.json")):
        where = display_path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            raise DataError(f"{where} is not a JSON file of `detect predict`: fix or remove it") from None
        if not (isinstance(doc, dict) and isinstance(doc.get("detections"), list)
                and all(isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool) and 0 < doc[k] <= MAX_PIXELS
                        for k in ("width", "height"))):
            raise DataError(f"{where} is not a JSON file of `detect predict` (no width, height and detections): "
                            "fix or remove it")
        docs[path.stem] = doc
    return docs


def _read_yolo(folder: Path, detections: bool, sizes: dict, truth: dict | None = None,
               gt_dir: Path | None = None) -> dict[str, list[tuple]]:
    out = {}
    for stem, rows in _txt_rows(folder).items():
        path = folder / f"{stem}.txt"
        if truth is not None and stem not in truth:
            _no_truth(path, gt_dir or folder)
        if rows and stem not in sizes:
            raise DataError(f"{display_path(path)} is YOLO txt (normalised) but the size of its image is unknown: "
                            "pass --images with the images (or score a `detect predict` folder, whose JSON has them)")
        if not detections:
            issues = LabelIssues()
            boxes, labels = parse_labels(path, sizes.get(stem, (1, 1)), 1 << 30, issues) if rows else ([], [])
            if issues:
                where, reason = issues.items[0]
                raise DataError(f"{where}: {reason}: not YOLO truth ('class xc yc w h', normalised); fix the line "
                                "or pass the right --layout")
            out[stem] = [(str(c), None, b, False) for b, c in zip(boxes, labels)]
            continue
        height, width = sizes.get(stem, (1, 1))
        found = []
        for n, fields in enumerate(rows, 1):
            where = f"{display_path(path)}:{n}"
            try:
                if len(fields) != 6 or not fields[0].isdigit():
                    raise ValueError
                xc, yc, w, h, score = (float(v) for v in fields[1:])
            except ValueError:
                raise DataError(f"{where}: not a YOLO detection ('class xc yc w h score', normalised): fix the "
                                "line or pass the right --layout") from None
            if not all(math.isfinite(v) for v in (xc, yc, w, h, score)) or not all(
                    -EDGE <= v <= 1 + EDGE for v in (xc, yc, w, h)) or w < 0 or h < 0:
                raise DataError(f"{where}: a coordinate is not a normalised number in [0, 1]: fix the line or pass "
                                "--layout pixels")
            found.append((fields[0], score, convert_box([xc * width, yc * height, w * width, h * height], "cxcywh"),
                          False))
        out[stem] = found
    return out


def _no_truth(path: Path, gt_dir: Path, count: int | None = None) -> None:
    many = f" ({count} such files)" if count else ""
    raise DataError(f"{display_path(path)} has no truth file in {display_path(gt_dir)}{many}: is --pred the detections "
                    "of these images? (add an empty truth file for an image without objects)")


def _read_ganforge(folder: Path) -> dict[str, list[tuple]]:
    out = {}
    for stem, doc in _predict_json(folder).items():
        found = []
        for n, det in enumerate(doc["detections"], 1):
            try:
                cls, score, box = det["class"], float(det["score"]), [float(v) for v in det["box_xyxy"]]
                if not isinstance(cls, int) or isinstance(cls, bool) or cls < 0 or len(box) != 4:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{display_path(folder / (stem + '.json'))}: detection {n} is not 'class, score, "
                                "box_xyxy': fix or remove the file") from None
            found.append((str(cls), score, box, False))
        out[stem] = found
    return out


def _check_boxes(files: dict[str, list[tuple]], folder: Path) -> None:
    """Refuse a non-finite score or a box that is inverted or overflows (it would match anything)."""
    for stem, rows in files.items():
        for row in rows:
            x1, y1, x2, y2 = row[2]
            values = [*row[2], *([row[1]] if row[1] is not None else [])]
            if not all(math.isfinite(v) and abs(v) <= MAX_PIXELS for v in values) or x2 < x1 or y2 < y1:
                raise DataError(f"{display_path(folder / stem)}: a box or score is not finite, beyond "
                                f"{MAX_PIXELS:.0e} pixels, or inverted ({', '.join(f'{v:g}' for v in values)}): "
                                "fix the file")


def load_for_map(gt: str | Path, pred: str | Path, layout: str = "auto", fmt: str = "xywh",
                 images: str | Path | None = None) -> Scored:
    """Read truth and detections for `detect map`; one-line DataError for anything it cannot score."""
    gt_dir, pred_dir = Path(gt).expanduser(), Path(pred).expanduser()
    for flag, folder in (("--gt", gt_dir), ("--pred", pred_dir)):
        if not folder.is_dir():
            raise DataError(f"{flag} {display_path(folder)} is not a folder: give the folder of per-image files")
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout == "ganforge":
        gt_layout, pred_layout = detect_layout(gt_dir, False), "ganforge"
    elif layout == "auto":
        gt_layout, pred_layout = detect_layout(gt_dir, False), detect_layout(pred_dir, True)
    else:
        gt_layout = pred_layout = layout
    if layout == "pixels":  # stated, but a folder of sub-pixel boxes with class ids is YOLO misread
        for flag, folder, detections in (("--gt", gt_dir, False), ("--pred", pred_dir, True)):
            if _txt_rows(folder) and detect_layout(folder, detections) == "yolo":
                raise DataError(f"{flag} {display_path(folder)} holds normalised YOLO boxes (every coordinate within "
                                "[0, 1], class ids), not pixels: pass --layout yolo (or auto)")
    sizes = _image_sizes(Path(images) if images else None, pred_dir) if "yolo" in (gt_layout, pred_layout) else {}
    truth_files = (read_folder(gt_dir, detections=False, fmt=fmt) if gt_layout == "pixels"
                   else _read_yolo(gt_dir, False, sizes))
    if gt_layout == "yolo":  # the YOLO layout: an image (known by its size) without a label file is background
        truth_files.update({stem: [] for stem in sizes if stem not in truth_files})
    pred_files = {"pixels": lambda: read_folder(pred_dir, detections=True, fmt=fmt),
                  "yolo": lambda: _read_yolo(pred_dir, True, sizes, truth_files, gt_dir),
                  "ganforge": lambda: _read_ganforge(pred_dir)}[pred_layout]()
    _check_boxes(truth_files, gt_dir)
    _check_boxes(pred_files, pred_dir)
    return _align(truth_files, pred_files, gt_dir, pred_dir, (gt_layout, pred_layout))


def _align(truth_files: dict, pred_files: dict, gt_dir: Path, pred_dir: Path, layouts: tuple[str, str]) -> Scored:
    if not truth_files:
        raise DataError(f"--gt {display_path(gt_dir)} has no .txt truth files: one file per image is needed")
    if not pred_files:
        raise DataError(f"--pred {display_path(pred_dir)} has no detection files: give the folder the detector wrote")
    orphans = sorted(set(pred_files) - set(truth_files))
    if orphans:
        _no_truth(pred_dir / f"{orphans[0]}.txt", gt_dir, len(orphans))
    missing = sorted(set(truth_files) - set(pred_files))
    warnings = []
    if missing:
        warnings.append(f"{len(missing)} of {len(truth_files)} truth images have no detection file in "
                        f"{display_path(pred_dir)} (first: {missing[0]}): scored as images without detections")
    if not any(pred_files.values()):
        warnings.append(f"{display_path(pred_dir)} holds no detections at all: every AP is 0")
    names = sorted({r[0] for rows in (*truth_files.values(), *pred_files.values()) for r in rows},
                   key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    truth_classes = {r[0] for rows in truth_files.values() for r in rows}
    pred_classes = {r[0] for rows in pred_files.values() for r in rows}
    if pred_classes and truth_classes and not pred_classes & truth_classes:
        raise DataError(f"no detected class is a truth class (detections: {', '.join(sorted(pred_classes)[:3])}; "
                        f"truth: {', '.join(sorted(truth_classes)[:3])}): both sides must name classes alike")
    index = {n: k for k, n in enumerate(names)}
    truths, preds = [], []
    for stem, rows in truth_files.items():
        truths.append({"boxes": torch.tensor([r[2] for r in rows], dtype=torch.float64).reshape(-1, 4),
                       "labels": torch.tensor([index[r[0]] for r in rows], dtype=torch.int64),
                       "difficult": torch.tensor([r[3] for r in rows], dtype=torch.bool)})
        det = pred_files.get(stem, [])
        preds.append({"boxes": torch.tensor([r[2] for r in det], dtype=torch.float64).reshape(-1, 4),
                      "scores": torch.tensor([r[1] for r in det], dtype=torch.float64),
                      "labels": torch.tensor([index[r[0]] for r in det], dtype=torch.int64)})
    return Scored(preds, truths, names, layouts, plus_one=layouts == ("pixels", "pixels"), warnings=warnings)
