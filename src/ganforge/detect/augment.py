"""The paper's augmentation with `torchvision.transforms.v2`: boxes follow every transform.

Training: random scaling and translation of up to 20% of the image, exposure and saturation scaled
by up to 1.5 either way in HSV, an optional horizontal flip (a per-dataset choice: digits must not
flip), then a resize to the model's square input with no letterbox (as darknet), boxes clipped to
the image and boxes left smaller than `MIN_BOX` pixels dropped. Evaluation: the resize only.

Colour (`color`): `hsv`, the paper's and darknet's (`random_distort_image`): each factor is drawn
uniformly in [1, 1.5] and inverted with probability 1/2, then S and V of every pixel are multiplied
by their factors and clipped to [0, 1] with the hue unchanged (`RandomHSV`, computed in RGB: with
M = max(R, G, B), each channel c becomes V' (1 - S'/S (M - c) / M)). `jitter`, torchvision's
`ColorJitter`: brightness multiplies R, G and B and clips each (the same as scaling V until a
channel saturates), saturation blends with the grey image, which is close to (not exactly) scaling S
in HSV, and the two are applied in a random order. Runs whose config predates the key used `jitter`.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

JITTER = 0.2  # scale and translation, fraction of the image
EXPOSURE = 1.5  # brightness factor range [1/1.5, 1.5]
SATURATION = 1.5
COLORS = ("hsv", "jitter")
MIN_BOX = 2.0  # pixels at the model's input: smaller leftovers after a crop are dropped


def _labels(sample: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    target = sample[1]
    return target["labels"], target["difficult"]


def _rand_scale(limit: float) -> float:
    """darknet's rand_scale: uniform in [1, limit], inverted with probability 1/2."""
    scale = 1 + (limit - 1) * torch.rand(()).item()
    return scale if torch.rand(()).item() < 0.5 else 1 / scale


def scale_hsv(image: torch.Tensor, saturation: float, exposure: float) -> torch.Tensor:
    """`image` (uint8 or float in [0, 1], C x H x W with C = 3, or 1 for grey) with S and V of every
    pixel multiplied by `saturation` and `exposure` and clipped to [0, 1]; the hue is kept."""
    uint8 = image.dtype == torch.uint8
    x = image.float() / 255 if uint8 else image.to(torch.promote_types(image.dtype, torch.float32))
    top = x.amax(dim=0, keepdim=True)  # V
    value = (top * exposure).clamp(max=1.0)
    if x.shape[0] == 1:
        out = value
    else:
        low = x.amin(dim=0, keepdim=True)
        sat = torch.where(top > 0, (top - low) / top.clamp(min=1e-12), torch.zeros_like(top))
        new_sat = (sat * saturation).clamp(max=1.0)
        ratio = torch.where(sat > 0, new_sat / sat.clamp(min=1e-12), torch.zeros_like(sat))
        out = value * (1 - ratio * (top - x) / top.clamp(min=1e-12))
    out = out.clamp(0.0, 1.0)
    return (out * 255).round().to(torch.uint8) if uint8 else out.to(image.dtype)


class RandomHSV(v2.Transform):
    """The paper's colour augmentation: exposure (V) and saturation (S) scaled in HSV by darknet's
    `rand_scale` factors. Boxes and labels pass through."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, saturation: float = SATURATION, exposure: float = EXPOSURE) -> None:
        super().__init__()
        self.saturation, self.exposure = saturation, exposure

    def make_params(self, flat_inputs: list) -> dict:
        return {"saturation": _rand_scale(self.saturation), "exposure": _rand_scale(self.exposure)}

    def transform(self, inpt, params: dict):
        return tv_tensors.wrap(scale_hsv(inpt.as_subclass(torch.Tensor), params["saturation"],
                                         params["exposure"]), like=inpt)


def detection_transform(input_size: int, *, train: bool, flip: bool = False, color: str = "hsv") -> v2.Compose:
    """A transform of (uint8 image 3 x H x W, target dict with BoundingBoxes) -> same at input_size."""
    steps: list = []
    if train:
        steps.append(v2.RandomAffine(degrees=0, translate=(JITTER, JITTER), scale=(1 - JITTER, 1 + JITTER)))
        if color == "hsv":
            steps.append(RandomHSV())
        elif color == "jitter":
            steps.append(v2.ColorJitter(brightness=(1 / EXPOSURE, EXPOSURE),
                                        saturation=(1 / SATURATION, SATURATION)))
        else:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
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

    def __init__(self, dataset, input_size: int, *, train: bool, color: str = "hsv") -> None:
        self.dataset = dataset
        self.transform = detection_transform(input_size, train=train, flip=getattr(dataset, "flip", False),
                                             color=color)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, target = self.dataset[i]
        return unwrap(*self.transform(*wrap(image, target)))


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack images (all at the model's input size); targets stay a list of dicts."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]
