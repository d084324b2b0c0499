"""Boxes, grid targets and the decoding of the network's grid.

Inside ganforge boxes are ``xyxy`` float tensors in pixels of their image (0-based, continuous: a
box covering the whole W x H image is [0, 0, W, H]). Other conventions (YOLO's normalised centres,
COCO's xywh, VOC's 1-based inclusive corners) are converted once, where a file is read or written.

Grid targets (`encode_targets`) follow darknet: the cell of a box is the one holding its centre,
``col = floor(cx * S)`` clamped to S - 1 so a centre at the right or bottom edge (x = 1.0) stays in
the grid; boxes narrower or shorter than `MIN_SIZE` of the image are dropped (degenerate); and
**when two centres fall in one cell the box listed first keeps the cell** and the later ones are
dropped (darknet keeps the first after shuffling; with one class set per cell a cell can answer for
one object only). `decode_targets` returns the kept boxes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert

MIN_SIZE = 0.01  # darknet drops truth boxes with w or h < .01 of the image


@dataclass
class GridTargets:
    """Per-cell truth for a batch: N x S x S masks and values, in image-relative units."""

    obj: torch.Tensor  # bool N x S x S: the cell holds an object centre
    box: torch.Tensor  # float N x S x S x 4: the object's cx, cy, w, h relative to the image
    cls: torch.Tensor  # int64 N x S x S: its class (0 where obj is False)

    def to(self, device: torch.device | str) -> "GridTargets":
        return GridTargets(self.obj.to(device), self.box.to(device), self.cls.to(device))


def cell_of(cxcy: torch.Tensor, grid: int) -> torch.Tensor:
    """Cell (col, row) of relative centres K x 2: floor(x * S), clamped at the far edge."""
    return (cxcy * grid).floor().long().clamp_(0, grid - 1)


def encode_image(boxes: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], grid: int,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's targets: (obj S x S, box S x S x 4 cxcywh relative, cls S x S).

    `boxes` are K x 4 xyxy pixels in an image of `size` = (height, width)."""
    height, width = size
    obj = torch.zeros(grid, grid, dtype=torch.bool)
    rel = torch.zeros(grid, grid, 4)
    cls = torch.zeros(grid, grid, dtype=torch.int64)
    if len(boxes) == 0:
        return obj, rel, cls
    scale = boxes.new_tensor([width, height, width, height])
    cxcywh = box_convert(boxes.float() / scale, "xyxy", "cxcywh")
    keep = (cxcywh[:, 2] >= MIN_SIZE) & (cxcywh[:, 3] >= MIN_SIZE)
    keep &= (cxcywh[:, :2] >= 0).all(1) & (cxcywh[:, :2] <= 1).all(1)
    cxcywh, labels = cxcywh[keep], labels[keep]
    cells = cell_of(cxcywh[:, :2], grid)
    for k in range(len(cxcywh)):  # in order: the first box in a cell keeps it
        col, row = int(cells[k, 0]), int(cells[k, 1])
        if not obj[row, col]:
            obj[row, col] = True
            rel[row, col] = cxcywh[k]
            cls[row, col] = labels[k]
    return obj, rel, cls


def encode_targets(targets: list[dict], size: tuple[int, int], grid: int) -> GridTargets:
    """Grid targets for a batch of ``{"boxes": K x 4 xyxy pixels, "labels": K}`` on images of one
    `size` = (height, width) (the model's input). Boxes marked ``difficult`` (VOC's flag, COCO's
    crowds) are left out, as darknet's voc_label.py leaves them out of its training labels; the
    evaluation counts them as neither found nor missed."""
    parts = []
    for t in targets:
        keep = ~t["difficult"].bool() if "difficult" in t else slice(None)
        parts.append(encode_image(t["boxes"][keep], t["labels"][keep], size, grid))
    return GridTargets(*(torch.stack(p) for p in zip(*parts)))


def decode_targets(targets: GridTargets, size: tuple[int, int]) -> list[dict]:
    """The boxes (xyxy pixels) and labels that grid targets hold, one dict per image, in cell order."""
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=targets.box.dtype)
    out = []
    for obj, box, cls in zip(targets.obj, targets.box, targets.cls):
        out.append({"boxes": box_convert(box[obj], "cxcywh", "xyxy") * scale, "labels": cls[obj]})
    return out


def split_output(out: torch.Tensor, boxes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N x S x S x (5B+C) -> (coords N x S x S x B x 4 as x, y, sqrt w, sqrt h; confidences
    N x S x S x B; class scores N x S x S x C). Views, no copies."""
    per_box = out[..., : 5 * boxes].unflatten(-1, (boxes, 5))
    return per_box[..., :4], per_box[..., 4], out[..., 5 * boxes:]


def grid_offsets(grid: int, device: torch.device | None = None) -> torch.Tensor:
    """S x S x 2 (col, row) of every cell, for adding cell offsets to x, y."""
    rows, cols = torch.meshgrid(torch.arange(grid, device=device), torch.arange(grid, device=device),
                                indexing="ij")
    return torch.stack([cols, rows], -1).float()


def decode_coords(coords: torch.Tensor) -> torch.Tensor:
    """Predicted (x, y, sqrt w, sqrt h) N x S x S x B x 4 -> cx, cy, w, h relative to the image.

    Squaring the square-root outputs keeps sizes >= 0 whatever their sign (darknet)."""
    grid = coords.shape[1]
    offsets = grid_offsets(grid, coords.device).unsqueeze(-2)  # S x S x 1 x 2
    centre = (coords[..., :2] + offsets) / grid
    return torch.cat([centre, coords[..., 2:].square()], -1)
