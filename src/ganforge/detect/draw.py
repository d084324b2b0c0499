"""Detections drawn on their images (`torchvision.utils.draw_bounding_boxes`)."""

from __future__ import annotations

import torch
from torchvision.utils import draw_bounding_boxes

PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
           "#808000", "#ffd8b1", "#000075", "#808080"]


def draw_detections(image_u8: torch.Tensor, detections: dict, names: list[str]) -> torch.Tensor:
    """uint8 3 x H x W with each box outlined in its class colour and labelled 'name score'."""
    boxes = detections["boxes"].reshape(-1, 4)
    if len(boxes) == 0:
        return image_u8.clone()
    labels = detections["labels"].tolist()
    scores = detections.get("scores")
    text = [names[c] if scores is None else f"{names[c]} {float(s):.2f}"
            for c, s in zip(labels, scores if scores is not None else labels)]
    colours = [PALETTE[c % len(PALETTE)] for c in labels]
    return draw_bounding_boxes(image_u8, boxes, text, colors=colours, width=1)
