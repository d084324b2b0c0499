"""Run a detector over a dataset and score it: predictions in each image's own pixels, then AP."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ganforge.data.pixels import normalize
from ganforge.detect.augment import Augmented, collate, unwrap, wrap
from ganforge.detect.data import DetectionSet
from ganforge.detect.infer import EVAL_CONF, NMS_IOU, postprocess
from ganforge.detect.voc_eval import APResult, evaluate

EVAL_BATCH = 64


def to_input(images_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float [0, 1] as darknet feeds its networks."""
    x = normalize(images_u8, "01")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset: DetectionSet, *, conf: float = EVAL_CONF,
                    iou: float = NMS_IOU, batch_size: int = EVAL_BATCH,
                    channels_last: bool = False) -> list[dict[str, torch.Tensor]]:
    """Detections for every image of `dataset`, in its original pixel coordinates. An image that
    cannot be decoded gets None (and is recorded in the set's issues)."""
    was_training = model.training
    model.eval()
    resize = Augmented(dataset, model.input_size, train=False).transform
    # an exported model (ONNX Runtime) has no parameters: it takes CPU tensors
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    out: list[dict[str, torch.Tensor] | None] = []
    try:
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            images = {i: dataset.readable(i) for i in idx}
            idx = [i for i in idx if images[i] is not None]
            found: dict[int, dict[str, torch.Tensor]] = {}
            if idx:
                batch, _ = collate([unwrap(*resize(*wrap(images[i], dataset.target(i)))) for i in idx])
                raw = model(to_input(batch.to(device), channels_last))
                sizes = [dataset.records[i].size for i in idx]
                found = {i: {k: v.cpu() for k, v in d.items()}
                         for i, d in zip(idx, postprocess(raw, sizes, model.boxes, conf=conf, iou=iou))}
            out += [found.get(i) for i in range(start, min(start + batch_size, len(dataset)))]
    finally:
        model.train(was_training)
    return out


def evaluate_model(model: nn.Module, dataset: DetectionSet, *, metric: str = "voc07",
                   iou: float = 0.5, channels_last: bool = False) -> APResult:
    """AP of `model` on `dataset` under `metric` at IoU `iou` (NMS at darknet's .5). Images that
    cannot be decoded are left out of both sides (and recorded in the set's issues)."""
    predictions = predict_dataset(model, dataset, channels_last=channels_last)
    kept = [i for i, p in enumerate(predictions) if p is not None]
    truths = [dataset.target(i) for i in kept]
    return evaluate([predictions[i] for i in kept], truths, dataset.num_classes, metric=metric, iou=iou)
