"""The YOLO v1 loss: the paper's equation 3, with darknet's choices where the paper is silent.

For every cell i and predictor j, with 1obj_ij = "predictor j of cell i is responsible":

    coord = l_coord * sum 1obj_ij [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
    obj   =           sum 1obj_ij (C_ij - C^_ij)^2                C^ = IoU(pred, truth), or 1
    noobj = l_noobj * sum (1 - 1obj_ij) C_ij^2                    every other predictor, object cell or not
    cls   =           sum 1obj_i sum_c (p_i(c) - p^_i(c))^2       once per cell holding an object centre

with l_coord = 5 and l_noobj = 0.5; the total is their sum divided by the batch size. The network
predicts sqrt w and sqrt h directly, so the loss never takes the root of a negative number and stays
finite for any output. The responsible predictor is the one whose decoded box (sizes squared) has
the highest IoU with the truth; when none overlaps it, the one with the lowest RMSE (darknet).
The IoU used as confidence target is treated as a constant (no gradient through it), as darknet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_convert

from ganforge.detect.boxes import GridTargets, decode_coords, split_output

LAMBDA_COORD = 5.0
LAMBDA_NOOBJ = 0.5


@dataclass
class LossParts:
    """The total and each term of equation 3 (already weighted: total = coord + obj + noobj + cls),
    all divided by the batch size."""

    total: torch.Tensor
    coord: torch.Tensor
    obj: torch.Tensor
    noobj: torch.Tensor
    cls: torch.Tensor

    def items(self) -> dict[str, float]:
        """Plain floats for logging: loss, loss_coord, loss_obj, loss_noobj, loss_cls."""
        return {"loss": float(self.total.detach()), **{f"loss_{k}": float(getattr(self, k).detach())
                                              for k in ("coord", "obj", "noobj", "cls")}}


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a[..., 4] and b[..., 4] (cxcywh) pair by pair.

    torchvision's `box_iou` gives the all-pairs matrix; here each predictor is compared with its own
    cell's truth only, which is this elementwise form."""
    a, b = box_convert(a, "cxcywh", "xyxy"), box_convert(b, "cxcywh", "xyxy")
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def responsible(pred_boxes: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot N x S x S x B of the responsible predictor, IoU N x S x S x B of every predictor).

    Highest IoU wins; where no predictor of a cell overlaps the truth, the lowest RMSE wins."""
    truth = truth.unsqueeze(-2).expand_as(pred_boxes)
    iou = paired_iou(pred_boxes, truth)
    rmse = (pred_boxes - truth).square().mean(-1).sqrt()
    any_overlap = (iou > 0).any(-1, keepdim=True)
    key = torch.where(any_overlap, iou, -rmse)
    best = key.argmax(-1, keepdim=True)
    return torch.zeros_like(iou, dtype=torch.bool).scatter_(-1, best, True), iou


def yolo_loss(out: torch.Tensor, targets: GridTargets, boxes: int = 2, *,
              lambda_coord: float = LAMBDA_COORD, lambda_noobj: float = LAMBDA_NOOBJ,
              rescore: bool = True) -> LossParts:
    """Equation 3 for network output N x S x S x (5B+C) against grid targets.

    rescore=True (darknet): the object term's target is the IoU of the responsible prediction with
    the truth; rescore=False: it is 1."""
    batch, grid = out.shape[0], out.shape[1]
    coords, conf, scores = split_output(out.float(), boxes)
    obj_cell = targets.obj  # N x S x S
    truth = targets.box.to(coords.dtype)  # N x S x S x 4, cx cy w h

    with torch.no_grad():
        resp, iou = responsible(decode_coords(coords), truth)
        resp &= obj_cell.unsqueeze(-1)  # N x S x S x B

    # Truth in the network's parametrisation: offset inside the cell, square roots of the sizes.
    offsets = (truth[..., :2] * grid).floor().clamp(0, grid - 1)
    truth_param = torch.cat([truth[..., :2] * grid - offsets, truth[..., 2:].sqrt()], -1)
    coord_err = (coords - truth_param.unsqueeze(-2)).square().sum(-1)  # N x S x S x B
    coord = lambda_coord * coord_err[resp].sum()

    conf_target = iou if rescore else torch.ones_like(iou)
    obj = (conf[resp] - conf_target[resp]).square().sum()
    noobj = lambda_noobj * conf[~resp].square().sum()

    onehot = torch.nn.functional.one_hot(targets.cls, scores.shape[-1]).to(scores.dtype)
    cls = (scores - onehot).square().sum(-1)[obj_cell].sum()

    parts = [t / batch for t in (coord, obj, noobj, cls)]
    return LossParts(parts[0] + parts[1] + parts[2] + parts[3], *parts)
