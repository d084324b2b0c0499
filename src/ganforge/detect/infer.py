"""From the network's grid to detections in the original image's pixels.

score(box j of cell i, class c) = P(c | object)_i * confidence_ij (the paper's test-time score);
pairs under `conf` are dropped, then NMS runs per class (`torchvision.ops.batched_nms`). Darknet
evaluates VOC with conf .001 and NMS IoU .5, and its demo draws at conf .2.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert

from ganforge.detect.boxes import decode_coords, split_output

EVAL_CONF = 0.001  # darknet's threshold for VOC evaluation
DRAW_CONF = 0.2  # darknet's demo threshold
NMS_IOU = 0.5
MAX_DETECTIONS = 100  # kept per image after NMS, best first


@torch.no_grad()
def postprocess(out: torch.Tensor, sizes: list[tuple[int, int]], boxes: int = 2, *,
                conf: float = EVAL_CONF, iou: float = NMS_IOU,
                max_det: int = MAX_DETECTIONS) -> list[dict[str, torch.Tensor]]:
    """Detections per image from output N x S x S x (5B+C).

    `sizes` are the original images' (height, width): the network saw them resized to its square
    input without letterbox, so relative boxes scale straight back to each original size. Returns
    ``{"boxes": K x 4 xyxy pixels, "scores": K, "labels": K}`` per image, by descending score."""
    coords, confidence, scores = split_output(out.float(), boxes)
    rel = box_convert(decode_coords(coords), "cxcywh", "xyxy")  # N x S x S x B x 4
    # N x S x S x B x C: class score of the cell times each predictor's confidence
    joint = scores.unsqueeze(-2) * confidence.unsqueeze(-1)
    n, num_classes = out.shape[0], scores.shape[-1]
    rel, joint = rel.reshape(n, -1, 4), joint.reshape(n, -1, num_classes)
    results = []
    for i, (height, width) in enumerate(sizes):
        box_idx, cls_idx = (joint[i] > conf).nonzero(as_tuple=True)
        scale = rel.new_tensor([width, height, width, height])
        pixel = rel[i, box_idx] * scale
        pixel = torch.stack([pixel[:, 0].clamp(0, width), pixel[:, 1].clamp(0, height),
                             pixel[:, 2].clamp(0, width), pixel[:, 3].clamp(0, height)], 1)
        score = joint[i, box_idx, cls_idx]
        keep = batched_nms(pixel, score, cls_idx, iou)[:max_det]  # sorted by descending score
        results.append({"boxes": pixel[keep], "scores": score[keep], "labels": cls_idx[keep]})
    return results
