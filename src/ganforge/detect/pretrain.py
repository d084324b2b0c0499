"""Pretraining a detector's convolutional trunk on classification, the paper's first stage.

YOLO v1's convolutions are first trained to classify ImageNet at half the detection resolution
(224 for a 448 detector), then the detector is trained on top of them. `pretrain_trunk` does the
same for any registered model: the trunk, a global average pool and a linear classifier, trained
with cross-entropy on batches from `batches(step)`; the classifier is thrown away afterwards.
For digits-det the batches are single digits of the train split's own source digits at 56 x 56
(`ganforge.detect.digits.classification_batch`), so no test handwriting is seen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ganforge.detect.evaluate import to_input
from ganforge.detect.model import YoloV1


def pretrain_trunk(model: YoloV1, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                   num_classes: int, *, steps: int, lr: float = 1e-3, channels_last: bool = False,
                   log: Callable[[int, dict], None] | None = None, log_every: int = 100) -> float:
    """Train `model.features` to classify; returns the last window's accuracy on the training batches.

    `batches(step)` gives (uint8 images N x 3 x H x W, int64 labels N)."""
    channels = next(m for m in reversed(model.features) if isinstance(m, nn.Conv2d)).out_channels
    device = next(model.parameters()).device
    classifier = nn.Linear(channels, num_classes).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = list(model.features.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    correct = seen = 0
    accuracy = 0.0
    for step in range(1, steps + 1):
        images, labels = batches(step)
        images, labels = images.to(device), labels.to(device)
        features = model.features(to_input(images, channels_last))  # N x C x h x w
        logits = classifier(features.mean((2, 3)))  # N x classes
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if step % log_every == 0 or step == steps:
            accuracy, correct, seen = correct / seen, 0, 0
            if log is not None:
                log(step, {"pretrain_loss": float(loss.detach()), "pretrain_accuracy": accuracy})
    return accuracy
