"""Average precision with PASCAL VOC semantics (the devkit's and py-faster-rcnn's `voc_eval`).

Per class, over all images:
- detections are taken in descending score; ties keep their input order (image order, then the
  order within an image), so the result never depends on the sort algorithm;
- a detection's best-overlapping truth box (IoU by `torchvision.ops.box_iou`) is a match when the
  IoU is > `iou`; a truth box already matched makes it a false positive (a duplicate); a
  `difficult` truth box makes it neither a true nor a false positive, and difficult boxes are not
  counted among the positives;
- areas follow the devkit's +1 pixel convention. Its corners are inclusive pixel indices: a box
  [x1, y1, x2, y2] covers (x2 - x1 + 1) x (y2 - y1 + 1) pixels. This project's boxes are continuous
  ([xmin - 1, xmax] for VOC's xmin..xmax, see voc.py), where the same box already measures
  x2 - x1: for them the devkit's areas and overlaps are the plain ones, and adding the pixel again
  would widen every box by one (a 4-pixel-wide box by a quarter). So ``plus_one`` is off by default
  and is for inputs in the devkit's own inclusive corners (`ganforge detect map` files);
- a class without (non-difficult) truth has no AP and is left out of the mean.

The three metrics integrate the same precision/recall curve differently, so their numbers differ and
each is labelled: ``voc07`` the 11-point interpolated AP (VOC 2007 test, the paper's 63.4),
``voc12`` the all-point AP (VOC 2010 and later), ``coco50`` the 101-point AP at IoU .5 that
pycocotools and torchmetrics call AP50 (here with VOC matching and, like pycocotools, no +1), and
``coco`` COCO's primary AP@[.5:.95] with pycocotools' matching (coco_eval.py; `iou` must be .5).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from ganforge.errors import ConfigError

METRICS = {
    "voc07": "VOC07 11-point",
    "voc12": "VOC12 all-point",
    "coco50": "COCO 101-point",
    "coco": "COCO",  # AP@[.5:.95], coco_eval.py
}


@dataclass
class APResult:
    """Per-class AP and their mean under one metric at one IoU threshold."""

    metric: str  # voc07 | voc12 | coco50 | coco
    iou: float
    map: float | None  # mean over classes with truth; None when no class has any
    ap: dict[int, float | None]  # class index -> AP (None: no truth, excluded from the mean)
    n_truth: dict[int, int] = field(default_factory=dict)  # non-difficult truth boxes per class
    n_detections: dict[int, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What the number is, e.g. 'VOC07 11-point mAP@0.5' or 'COCO mAP@[.5:.95]'."""
        return "COCO mAP@[.5:.95]" if self.metric == "coco" else f"{METRICS[self.metric]} mAP@{self.iou:g}"

    def to_json(self, names: list[str] | None = None) -> dict:
        """``{"metric", "iou", "label", "map", "ap": {name: AP}, "n_truth": {name: count}}``."""
        name = (lambda c: names[c]) if names else str
        return {"metric": self.metric, "iou": self.iou, "label": self.label, "map": self.map,
                "ap": {name(c): v for c, v in self.ap.items()},
                "n_truth": {name(c): v for c, v in self.n_truth.items()}}


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: str) -> float:
    """AP from a precision/recall curve (in detection order) under `metric`."""
    if metric == "voc07":
        # mean of the best precision at recall >= t for t = 0, 0.1, ..., 1
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    envelope = np.maximum.accumulate(np.concatenate([precision, [0.0]])[::-1])[::-1]
    if metric == "voc12":
        edges = np.concatenate([[0.0], recall, [1.0]])
        steps = np.diff(edges)  # area under the envelope where recall changes
        return float((steps * envelope).sum())
    if metric == "coco50":
        thresholds = np.linspace(0, 1, 101)
        idx = np.searchsorted(recall, thresholds, side="left")
        return float(np.where(idx < len(recall), envelope[np.minimum(idx, len(recall))], 0.0).mean())
    raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def _iou_plus_one(a: torch.Tensor, b: torch.Tensor, plus_one: bool) -> torch.Tensor:
    if plus_one:  # inclusive corners: the far one a pixel out gives the devkit's (x2 - x1 + 1) areas
        shift = a.new_tensor([0, 0, 1, 1])
        a, b = a + shift, b + shift
    return box_iou(a, b)


def evaluate(predictions: list[dict], truths: list[dict], num_classes: int, *,
             metric: str = "voc07", iou: float = 0.5, plus_one: bool = False) -> APResult:
    """AP per class and mAP of `predictions` against `truths`, one dict per image, same order.

    predictions: ``boxes`` K x 4 xyxy pixels, ``scores`` K, ``labels`` K.
    truths: ``boxes``, ``labels``, and optionally ``difficult`` (bool K).
    plus_one: the boxes are the devkit's inclusive pixel corners, so areas take +1 (what
    `ganforge detect map` sets for voc07 / voc12); off: continuous boxes, this project's own."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction lists for {len(truths)} images")
    if metric == "coco":
        if iou != 0.5:
            raise ConfigError(f"--metric coco averages IoU 0.50 to 0.95 itself: drop --iou {iou:g} "
                              "(or use coco50, voc07, voc12)")
        from ganforge.detect.coco_eval import coco_ap

        ap_c, n_truth_c, n_dets_c = coco_ap(predictions, truths, num_classes)
        valid_c = [v for v in ap_c.values() if v is not None]
        return APResult(metric, iou, float(np.mean(valid_c)) if valid_c else None, ap_c, n_truth_c, n_dets_c)
    # class -> list of (score, image, row in that image's IoU matrix)
    dets: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    overlaps: dict[tuple[int, int], torch.Tensor] = {}  # (image, class) -> dets x truths IoU
    difficult: dict[tuple[int, int], torch.Tensor] = {}
    n_truth = {c: 0 for c in range(num_classes)}
    for i, (pred, truth) in enumerate(zip(predictions, truths)):
        t_boxes = torch.as_tensor(truth["boxes"], dtype=torch.float64).reshape(-1, 4)
        t_labels = torch.as_tensor(truth["labels"], dtype=torch.int64).reshape(-1)
        t_diff = torch.as_tensor(truth.get("difficult", torch.zeros(len(t_labels))),
                                 dtype=torch.bool).reshape(-1)
        p_boxes = torch.as_tensor(pred["boxes"], dtype=torch.float64).reshape(-1, 4)
        p_scores = torch.as_tensor(pred["scores"], dtype=torch.float64).reshape(-1)
        p_labels = torch.as_tensor(pred["labels"], dtype=torch.int64).reshape(-1)
        for c in range(num_classes):
            n_truth[c] += int(((t_labels == c) & ~t_diff).sum())
            rows = (p_labels == c).nonzero().flatten()
            if len(rows) == 0:
                continue
            gt = t_labels == c
            overlaps[(i, c)] = _iou_plus_one(p_boxes[rows], t_boxes[gt], plus_one)
            difficult[(i, c)] = t_diff[gt]
            dets[c].extend((float(p_scores[r]), i, k) for k, r in enumerate(rows.tolist()))

    ap: dict[int, float | None] = {}
    for c in range(num_classes):
        if n_truth[c] == 0:
            ap[c] = None
            continue
        order = sorted(range(len(dets[c])), key=lambda k: -dets[c][k][0])  # stable on ties
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        matched: dict[int, set[int]] = defaultdict(set)
        for rank, k in enumerate(order):
            _, image, row = dets[c][k]
            ious = overlaps[(image, c)][row]
            if len(ious) == 0 or float(ious.max()) <= iou:
                fp[rank] = 1
                continue
            best = int(ious.argmax())
            if bool(difficult[(image, c)][best]):
                continue  # neither: a detection of a difficult object is not held against it
            if best in matched[image]:
                fp[rank] = 1  # a second detection of a matched object
            else:
                matched[image].add(best)
                tp[rank] = 1
        counted = (tp + fp) > 0  # rows of ignored (difficult) detections drop out of the curve
        tp_cum, fp_cum = np.cumsum(tp[counted]), np.cumsum(fp[counted])
        recall = tp_cum / n_truth[c]
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap[c] = average_precision(recall, precision, metric)
    valid = [v for v in ap.values() if v is not None]
    return APResult(metric, iou, float(np.mean(valid)) if valid else None, ap, n_truth,
                    {c: len(dets[c]) for c in range(num_classes)})
