"""Per-image text files in the Object-Detection-Metrics convention, for scoring any tool's output.

One ``<image>.txt`` per image in each folder, one object per line, class names without spaces:

- truth: ``class left top width height`` (an optional trailing ``difficult`` marks a difficult one);
- detections: ``class confidence left top width height``;

in pixels; with ``fmt="xyxy"`` the last four numbers are ``left top right bottom``. Every truth file
is an image (an empty file is an image without objects); a detection file without a truth file is
an error, since its image could not be scored. A bad line is a one-line error naming the file and
line: a scorer that skipped input would report a number for data it did not see.
"""

from __future__ import annotations

import math
from pathlib import Path


from ganforge.detect.data import convert_box
from ganforge.errors import DataError

BOX_FORMATS = ("xywh", "xyxy")


def _parse_line(fields: list[str], with_score: bool, fmt: str, where: str) -> tuple:
    expected = 6 if with_score else 5
    difficult = False
    if not with_score and len(fields) == 6 and fields[5].lower() == "difficult":
        fields, difficult = fields[:5], True
    if len(fields) != expected:
        shape = "class confidence left top w h" if with_score else "class left top w h [difficult]"
        raise DataError(f"{where}: expected '{shape}', got {len(fields)} fields: fix the line")
    try:
        numbers = [float(v) for v in fields[1:]]
    except ValueError:
        raise DataError(f"{where}: {' '.join(fields[1:])!r} are not all numbers: fix the line") from None
    if not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{where}: a value is not a finite number: fix the line")
    score, (a, b, c, d) = (numbers[0], numbers[1:]) if with_score else (None, numbers)
    box = convert_box([a, b, c, d], "xywh") if fmt == "xywh" else [a, b, c, d]
    if box[2] < box[0] or box[3] < box[1]:
        raise DataError(f"{where}: the box has a negative size: fix the line or the --format")
    return fields[0], score, box, difficult


def read_folder(folder: str | Path, *, detections: bool, fmt: str = "xywh") -> dict[str, list[tuple]]:
    """image stem -> [(class, score or None, xyxy box, difficult)] for every .txt in `folder`."""
    folder = Path(folder).expanduser()
    if fmt not in BOX_FORMATS:
        raise DataError(f"unknown box format {fmt!r}; valid: {', '.join(BOX_FORMATS)}")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: give the folder of per-image .txt files")
    out: dict[str, list[tuple]] = {}
    for path in sorted(folder.glob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path} ({type(exc).__name__}): fix or remove it") from None
        out[path.stem] = [_parse_line(line.split(), detections, fmt, f"{path}:{n}")
                          for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    return out
