"""The paper's augmentation with `torchvision.transforms.v2`: boxes follow every transform.

Training: random scaling and translation of up to 20% of the image, exposure and saturation scaled
by up to 1.5 either way, an optional horizontal flip (a per-dataset choice: digits must not flip),
then a resize to the model's square input with no letterbox (as darknet), boxes clipped to the
image and boxes left smaller than `MIN_BOX` pixels dropped. Evaluation: the resize only.

torchvision's brightness multiplies R, G and B, which is the same as scaling V in HSV; its
saturation blends with the grey image, which is close to (not exactly) scaling S in HSV.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

JITTER = 0.2  # scale and translation, fraction of the image
EXPOSURE = 1.5  # brightness factor range [1/1.5, 1.5]
SATURATION = 1.5
MIN_BOX = 2.0  # pixels at the model's input: smaller leftovers after a crop are dropped


def _labels(sample: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    target = sample[1]
    return target["labels"], target["difficult"]


def detection_transform(input_size: int, *, train: bool, flip: bool = False) -> v2.Compose:
    """A transform of (uint8 image 3 x H x W, target dict with BoundingBoxes) -> same at input_size."""
    steps: list = []
    if train:
        steps += [
            v2.RandomAffine(degrees=0, translate=(JITTER, JITTER), scale=(1 - JITTER, 1 + JITTER)),
            v2.ColorJitter(brightness=(1 / EXPOSURE, EXPOSURE), saturation=(1 / SATURATION, SATURATION)),
        ]
        if flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [
        v2.Resize((input_size, input_size), antialias=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=MIN_BOX, min_area=MIN_BOX, labels_getter=_labels),
    ]
    return v2.Compose(steps)


def wrap(image: torch.Tensor, target: dict) -> tuple[tv_tensors.Image, dict]:
    """Mark the image and the xyxy pixel boxes for transforms.v2."""
    height, width = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
    return tv_tensors.Image(image), {**target, "boxes": boxes}


def unwrap(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Plain tensors again: uint8 image, float32 xyxy boxes."""
    return image.as_subclass(torch.Tensor), {**target, "boxes": target["boxes"].as_subclass(torch.Tensor)}


class Augmented(torch.utils.data.Dataset):
    """A detection dataset seen through `detection_transform` (the set's own flip choice)."""

    def __init__(self, dataset, input_size: int, *, train: bool) -> None:
        self.dataset = dataset
        self.transform = detection_transform(input_size, train=train, flip=getattr(dataset, "flip", False))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, target = self.dataset[i]
        return unwrap(*self.transform(*wrap(image, target)))


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack images (all at the model's input size); targets stay a list of dicts."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]
