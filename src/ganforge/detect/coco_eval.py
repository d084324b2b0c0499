"""COCO's primary metric, AP@[.5:.95], with pycocotools' own matching and integration.

What `COCOeval` does for bounding boxes with area "all" and maxDets 100, without crowds:
- per image and class, the detections in descending score (a stable sort: ties keep their order),
  only the first 100 kept;
- at each IoU threshold t in .50, .55, ..., .95, each detection in turn takes the unmatched truth
  box of highest IoU that is >= t (COCO's >=, where VOC has >); truth boxes marked difficult play
  COCO's "ignore": a detection matched to one is neither true nor false, and a non-ignored truth box
  is preferred;
- over all images, per class, precision is made monotone and read at 101 recall points (0 where the
  recall is never reached); a class without (non-ignored) truth has no AP;
- the mean over thresholds, recall points and classes is the number COCO, Ultralytics (mAP50-95) and
  pycocotools' first summary line report. IoU is the plain one (no +1 pixel).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # pycocotools' iouThrs
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # recThrs
MAX_DETS = 100


def _match(ious: np.ndarray, ignored: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(matched: bool per detection, ignored: bool per detection) at threshold `t`; truth columns
    are ordered with the ignored ones last, as COCOeval sorts them."""
    taken = np.zeros(ious.shape[1], dtype=bool)
    matched = np.zeros(ious.shape[0], dtype=bool)
    dt_ignored = np.zeros(ious.shape[0], dtype=bool)
    for d in range(ious.shape[0]):
        best, m = min(t, 1 - 1e-10), -1
        for g in range(ious.shape[1]):
            if taken[g]:
                continue
            if m > -1 and not ignored[m] and ignored[g]:
                break  # a match with a counted box is never traded for an ignored one
            if ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m > -1:
            taken[m] = True
            matched[d] = True
            dt_ignored[d] = ignored[m]
    return matched, dt_ignored


def _ap_101(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_truth: int) -> float:
    order = np.argsort(-scores, kind="mergesort")
    tp_cum, fp_cum = np.cumsum(tp[order]), np.cumsum(fp[order])
    recall = tp_cum / n_truth
    precision = tp_cum / (tp_cum + fp_cum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, max(len(precision) - 1, 0))]
                 if len(precision) else 0.0, 0.0)
    return float(np.mean(q))


def coco_ap(predictions: list[dict], truths: list[dict], num_classes: int) -> tuple[dict, dict, dict]:
    """(AP per class (None without truth), truth counts, detection counts) under AP@[.5:.95]."""
    per_class: dict[int, list[tuple]] = defaultdict(list)  # class -> per image (scores, tp[T,D], fp[T,D])
    n_truth = {c: 0 for c in range(num_classes)}
    n_dets = {c: 0 for c in range(num_classes)}
    for pred, truth in zip(predictions, truths):
        t_boxes = torch.as_tensor(truth["boxes"], dtype=torch.float64).reshape(-1, 4)
        t_labels = torch.as_tensor(truth["labels"], dtype=torch.int64).reshape(-1)
        t_ign = torch.as_tensor(truth.get("difficult", torch.zeros(len(t_labels))), dtype=torch.bool).reshape(-1)
        p_boxes = torch.as_tensor(pred["boxes"], dtype=torch.float64).reshape(-1, 4)
        p_scores = torch.as_tensor(pred["scores"], dtype=torch.float64).reshape(-1).numpy()
        p_labels = torch.as_tensor(pred["labels"], dtype=torch.int64).reshape(-1)
        for c in range(num_classes):
            gt = (t_labels == c).nonzero().flatten()
            gt = gt[torch.argsort(t_ign[gt].to(torch.int8), stable=True)]  # ignored last
            ignored = t_ign[gt].numpy()
            n_truth[c] += int((~t_ign[gt]).sum())
            rows = (p_labels == c).nonzero().flatten().numpy()
            rows = rows[np.argsort(-p_scores[rows], kind="mergesort")][:MAX_DETS]
            n_dets[c] += len(rows)
            if len(rows) == 0:
                continue
            ious = box_iou(p_boxes[rows], t_boxes[gt]).numpy()
            tp = np.zeros((len(IOU_THRESHOLDS), len(rows)))
            fp = np.zeros_like(tp)
            for k, t in enumerate(IOU_THRESHOLDS):
                matched, dt_ignored = _match(ious, ignored, float(t))
                tp[k] = matched & ~dt_ignored
                fp[k] = ~matched
            per_class[c].append((p_scores[rows], tp, fp))
    ap: dict[int, float | None] = {}
    for c in range(num_classes):
        if n_truth[c] == 0:
            ap[c] = None
            continue
        parts = per_class[c]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        per_t = []
        for k in range(len(IOU_THRESHOLDS)):
            tp = np.concatenate([p[1][k] for p in parts]) if parts else np.zeros(0)
            fp = np.concatenate([p[2][k] for p in parts]) if parts else np.zeros(0)
            per_t.append(_ap_101(scores, tp, fp, n_truth[c]))
        ap[c] = float(np.mean(per_t))
    return ap, n_truth, n_dets
