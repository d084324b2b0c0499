"""Detection datasets: images with boxes, from any supported layout, and the problems found in them.

Every layout loads to a :class:`DetectionSet`: a list of :class:`Record` (where the image is, its
size, its boxes as xyxy pixels, labels and `difficult` flags) plus the class names. Annotation files
are untrusted input: each bad box, line or file is recorded in the set's :class:`LabelIssues` with
its file name and left out, and loading goes on; a dataset that cannot be used at all (no names,
a missing folder) is one :class:`~ganforge.errors.DataError` line saying what to fix.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

from ganforge.data.decode import IMAGE_SUFFIXES, decode_native, image_problem, open_image  # noqa: F401 - IMAGE_SUFFIXES: shared

EDGE_TOLERANCE = 0.005  # a box may overhang its image by this fraction of the side; it is clipped
# What Pillow raises for a file it cannot decode, and for one past the size limit (`data.decode`)
BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
                    Image.DecompressionBombError, Image.DecompressionBombWarning)


@dataclass
class Record:
    """One image and its truth: boxes K x 4 xyxy float32 pixels, labels K int64, difficult K bool."""

    image: Path | int  # a file, or an index into the set's in-memory images
    size: tuple[int, int]  # (height, width)
    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor

    @property
    def name(self) -> str:
        return self.image.name if isinstance(self.image, Path) else f"image-{self.image:06d}"


def make_record(image: Path | int, size: tuple[int, int], boxes: list, labels: list,
                difficult: list | None = None) -> Record:
    """A Record from plain lists (boxes as [x1, y1, x2, y2] pixels)."""
    return Record(image, size, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  torch.tensor(labels, dtype=torch.int64).reshape(-1),
                  torch.tensor(difficult if difficult is not None else [False] * len(labels),
                               dtype=torch.bool).reshape(-1))


class LabelIssues:
    """Problems found while reading annotations and images: what, where, how many."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (file[:line], reason)
        self._seen: set[tuple[str, str]] = set()

    def add(self, where: str | os.PathLike, reason: str) -> None:
        item = (str(where), reason)
        if item not in self._seen:  # an image that fails in every epoch is reported once
            self._seen.add(item)
            self.items.append(item)

    def extend(self, other: "LabelIssues") -> None:
        for where, reason in other.items:
            self.add(where, reason)

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> Counter:
        """How many of each kind of problem (the reason's text before any ':')."""
        return Counter(reason.split(":")[0] for _, reason in self.items)

    def lines(self) -> list[str]:
        """One line per problem: 'file[:line]: reason'."""
        return [f"{where}: {reason}" for where, reason in self.items]

    def summary(self) -> str:
        """One line: the count of each kind and the first problem; '' when there is none."""
        if not self.items:
            return ""
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.counts().most_common())
        files = len({where.rsplit(":", 1)[0] for where, _ in self.items})
        return (f"{len(self.items)} annotation problems in {files} files, left out ({kinds}); "
                f"first: {self.lines()[0]}")


def convert_box(box: list[float], fmt: str, to: str = "xyxy") -> list[float]:
    """One box from `fmt` to `to` ("xyxy", "xywh", "cxcywh"), in float64 so that exact values stay
    exact (`torchvision.ops.box_convert`)."""
    return box_convert(torch.tensor([box], dtype=torch.float64), fmt, to)[0].tolist()


def check_box(box: list[float], size: tuple[int, int]) -> tuple[list[float] | None, str | None]:
    """Validate one xyxy pixel box against its image: (clipped box, None) or (None, reason)."""
    height, width = size
    if not all(np.isfinite(box)):
        return None, "malformed: a coordinate is not a finite number"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return None, f"zero or negative size: box {_fmt(box)}"
    tol_x, tol_y = EDGE_TOLERANCE * width, EDGE_TOLERANCE * height
    if x1 < -tol_x or y1 < -tol_y or x2 > width + tol_x or y2 > height + tol_y:
        return None, f"coordinates outside the image: box {_fmt(box)} in {width}x{height}"
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))], None


def _fmt(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def image_size(path: Path, issues: LabelIssues) -> tuple[int, int] | None:
    """(height, width) from the image header, or None (recorded) when it cannot be read."""
    try:
        with open_image(path) as img:
            width, height = img.size
    except BAD_IMAGE_ERRORS as exc:
        issues.add(path, image_problem(exc))
        return None
    return height, width


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file to uint8 3 x H x W RGB through the shared decoder (16-bit and float
    scaled, alpha on white, the same size limit as every task). Raises one of BAD_IMAGE_ERRORS."""
    return torch.from_numpy(decode_native(path)).permute(2, 0, 1).contiguous()


@dataclass(eq=False)
class DetectionSet(torch.utils.data.Dataset):
    """Images with their truth; ``set[i]`` is (uint8 3 x H x W, {"boxes", "labels", "difficult"}).

    An image that fails to decode when it is read is recorded in `issues` and the next readable
    image is returned in its place, so a run goes on without it."""

    name: str
    names: list[str]  # class names; labels index into them
    records: list[Record]
    issues: LabelIssues = field(default_factory=LabelIssues)
    images: torch.Tensor | None = None  # in-memory uint8 N x 3 x H x W, for Record.image ints
    flip: bool = True  # horizontal flip is a valid augmentation for this data
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def image(self, i: int) -> torch.Tensor:
        record = self.records[i]
        if isinstance(record.image, int):
            return self.images[record.image]
        return read_image(record.image)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        for offset in range(len(self.records)):
            k = (i + offset) % len(self.records)
            image = self.readable(k)
            if image is not None:
                return image, self.target(k)
        raise IndexError(f"no readable image in {self.name}")

    def readable(self, i: int) -> torch.Tensor | None:
        """Image `i`, or None (recorded in `issues`) when it cannot be decoded."""
        try:
            return self.image(i)
        except BAD_IMAGE_ERRORS as exc:
            self.issues.add(self.records[i].image, image_problem(exc))
            return None

    def target(self, i: int) -> dict[str, torch.Tensor]:
        r = self.records[i]
        return {"boxes": r.boxes.clone(), "labels": r.labels.clone(), "difficult": r.difficult.clone()}

    def subset(self, indices: list[int]) -> "DetectionSet":
        """The same set restricted to `indices` (sharing images and issues)."""
        return DetectionSet(self.name, self.names, [self.records[i] for i in indices], self.issues,
                            self.images, self.flip, self.source)
