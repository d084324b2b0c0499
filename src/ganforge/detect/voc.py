"""PASCAL VOC: the VOCdevkit layout, its XML annotations, and the official archives.

A VOC folder (``VOCdevkit/VOC2007`` or any folder laid out like it) holds ``Annotations/<id>.xml``,
``ImageSets/Main/<split>.txt`` (one image id per line) and ``JPEGImages/<id>.jpg``. Boxes in the XML
are 1-based inclusive pixel corners; inside ganforge they become 0-based continuous corners:
``x1 = xmin - 1, x2 = xmax`` (a box of the pixels 1..W covers [0, W]). ``difficult`` objects are kept
and flagged: evaluation counts them neither as positives nor as false positives. The XML is parsed
with `defusedxml`, so entity expansion ("billion laughs") and external entities are refused; such a
file is reported and skipped. Class names are the 20 of VOC, or those of a ``names.txt`` (one per
line) beside ``Annotations``.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import defusedxml
import defusedxml.ElementTree as SafeET

from ganforge.detect.data import DetectionSet, LabelIssues, Record, check_box, image_size, make_record
from ganforge.errors import DataError
from ganforge.io import atomic_write_bytes

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
NAMES_FILE = "names.txt"


def is_voc_folder(path: Path) -> bool:
    return (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


def voc_names(root: Path) -> list[str]:
    names_file = root / NAMES_FILE
    if names_file.is_file():
        names = [ln.strip() for ln in names_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if names:
            return names
    return list(VOC_CLASSES)


def _number(node: Element | None, tag: str) -> float:
    text = node.findtext(tag) if node is not None else None
    if text is None:
        raise ValueError(f"no <{tag}>")
    return float(text)


def parse_annotation(xml: Path, image: Path, names: list[str], issues: LabelIssues) -> Record | None:
    """The Record of one annotation file, or None (recorded) when the file or its image is unusable."""
    try:
        tree = SafeET.parse(xml)
    except defusedxml.DefusedXmlException as exc:
        issues.add(xml, f"refused XML: {type(exc).__name__} (entities or DTDs are not allowed)")
        return None
    except (ParseError, OSError) as exc:
        issues.add(xml, f"malformed XML: {exc}")
        return None
    root = tree.getroot()
    filename = root.findtext("filename")
    if filename and Path(filename).name == filename:  # never a path: it could point anywhere
        image = image.with_name(filename)
    size = image_size(image, issues)
    if size is None:
        return None
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object"), 1):
        where = f"{xml}:object {k}"
        name = (obj.findtext("name") or "").strip()
        if name not in names:
            issues.add(where, f"unknown class: {name!r} is not one of the names")
            continue
        try:
            bnd = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (_number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax"))
            flag = int((obj.findtext("difficult") or "0").strip() or 0)
        except ValueError as exc:
            issues.add(where, f"malformed object: {exc}")
            continue
        box, reason = check_box([xmin - 1, ymin - 1, xmax, ymax], size)
        if reason:
            issues.add(where, reason)
            continue
        boxes.append(box)
        labels.append(names.index(name))
        difficult.append(bool(flag))
    return make_record(image, size, boxes, labels, difficult)


def load_voc(root: str | Path, split: str = "trainval", names: list[str] | None = None) -> DetectionSet:
    """The images listed in ``ImageSets/Main/<split>.txt`` of a VOC folder."""
    root = Path(root).expanduser()
    if not is_voc_folder(root):
        raise DataError(f"{root} is not a VOC folder: it needs Annotations/, ImageSets/Main/ and "
                        "JPEGImages/ (as VOCdevkit/VOC2007)")
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise DataError(f"{listing} does not exist: choose a split of {', '.join(have) or '(none)'}")
    names = names or voc_names(root)
    issues = LabelIssues()
    records = []
    for ident in (ln.split()[0] for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()):
        if Path(ident).name != ident:
            issues.add(listing, f"malformed line: image id {ident!r} is a path")
            continue
        xml = root / "Annotations" / f"{ident}.xml"
        if not xml.is_file():
            issues.add(xml, "missing annotation file")
            continue
        record = parse_annotation(xml, root / "JPEGImages" / f"{ident}.jpg", names, issues)
        if record is not None:
            records.append(record)
    return DetectionSet(f"voc:{root}", names, records, issues, source=f"{root} [{split}]")


def annotation_xml(record: Record, filename: str, names: list[str]) -> bytes:
    """The VOC XML of a record (1-based inclusive corners; integer pixel boxes round-trip exactly)."""
    height, width = record.size
    ann = Element("annotation")
    SubElement(ann, "filename").text = filename
    size = SubElement(ann, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        SubElement(size, tag).text = str(value)
    for (x1, y1, x2, y2), c, d in zip(record.boxes.tolist(), record.labels.tolist(),
                                      record.difficult.tolist()):
        obj = SubElement(ann, "object")
        SubElement(obj, "name").text = names[c]
        SubElement(obj, "difficult").text = str(int(d))
        bnd = SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            SubElement(bnd, tag).text = f"{value:g}"
    return tostring(ann, encoding="utf-8")


def write_annotation(path: Path, record: Record, filename: str, names: list[str]) -> None:
    atomic_write_bytes(path, annotation_xml(record, filename, names))
