"""Offline translation datasets made from data already installed, for the demo, the tests and the
measurements. Each gives uint8 N x 1 x 32 x 32 images (MNIST's 28 px padded by 2, as in the GAN
recipes' 32 px data) with the source digit's label:

- `edges2mnist` (paired): Canny edges of a digit -> the digit. The pix2pix "edges2*" task in small.
- `thin2thick` (paired) and `thin2thick-unpaired` (A and B from disjoint halves of the digits): a
  digit thinned to a one-pixel skeleton (scikit-image `thin`) -> the skeleton dilated by a disk of
  radius 1, a known stroke-width change.
- `digits2mnist` (unpaired): scikit-learn's 8 x 8 digits, upsampled -> MNIST digits; a real domain gap.
- `horse2zebra-toy` (unpaired, colour): scikit-image's horse silhouette, placed at random on grass,
  brown (A) or striped black and white (B): the CycleGAN tutorial's example, offline.

The splits are mnist5k's (and digits') own: train and test never share a digit.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
BUILTINS = ("edges2mnist", "thin2thick", "thin2thick-unpaired", "digits2mnist", "horse2zebra-toy")
PAIRED = {"edges2mnist": True, "thin2thick": True, "thin2thick-unpaired": False, "digits2mnist": False,
          "horse2zebra-toy": False}
TOY_COUNTS = {"train": 800, "test": 200}  # images of each side


def _mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    from ganforge.data.embedded import load_embedded_split

    images, labels, _ = load_embedded_split("mnist5k", split)
    return np.pad(images[:, 0].numpy(), ((0, 0), (2, 2), (2, 2))), labels.numpy()  # N x 32 x 32


def edges(image: np.ndarray) -> np.ndarray:
    from skimage.feature import canny

    return canny(image / 255.0, sigma=1.0)


def thin(image: np.ndarray) -> np.ndarray:
    from skimage.morphology import thin as skeleton

    return skeleton(image >= 128)


def thicken(skeleton: np.ndarray) -> np.ndarray:
    from skimage.morphology import dilation, disk

    return dilation(skeleton, disk(1))


def _u8(masks: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks).astype(np.uint8) * 255).unsqueeze(1)


@functools.lru_cache(maxsize=8)
def builtin(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A images, A labels, B images, B labels) of a built-in's split ("train" or "test")."""
    digits, labels = _mnist(split)
    lab = torch.from_numpy(labels)
    if name == "edges2mnist":
        a = _u8([edges(d) for d in digits])
        return a, lab, torch.from_numpy(digits).unsqueeze(1), lab
    if name.startswith("thin2thick"):
        skeletons = [thin(d) for d in digits]
        a, b = _u8(skeletons), _u8([thicken(s) for s in skeletons])
        if name == "thin2thick":
            return a, lab, b, lab
        # unpaired: the thin versions of one half of the digits, the thick versions of the other
        order = np.random.RandomState(1).permutation(len(digits))
        first, second = torch.from_numpy(np.sort(order[::2])), torch.from_numpy(np.sort(order[1::2]))
        return a[first], lab[first], b[second], lab[second]
    if name == "digits2mnist":
        from ganforge.data.embedded import load_embedded_split

        small, small_labels, _ = load_embedded_split("digits", split)
        up = F.interpolate(small.float(), size=(24, 24), mode="bilinear", align_corners=False)
        up = F.pad(up, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)  # the digit in the middle 24 px
        return up, small_labels, torch.from_numpy(digits).unsqueeze(1), lab
    if name == "horse2zebra-toy":
        seeds = (0, 1) if split == "train" else (2, 3)  # A and B, train and test: four disjoint streams
        a = torch.stack([_animal(rng, zebra=False) for rng in _streams(seeds[0], TOY_COUNTS[split])])
        b = torch.stack([_animal(rng, zebra=True) for rng in _streams(seeds[1], TOY_COUNTS[split])])
        none = torch.full((len(a),), -1, dtype=torch.int64)
        return a, none, b, none
    raise KeyError(name)


def _streams(seed: int, n: int):
    rng = np.random.RandomState(seed)
    return [np.random.RandomState(rng.randint(2 ** 31)) for _ in range(n)]


@functools.lru_cache(maxsize=1)
def _horse_mask() -> np.ndarray:
    from skimage.data import horse

    return ~horse()  # True on the horse (the image is a black silhouette on white)


def _animal(rng: np.random.RandomState, zebra: bool, size: int = SIZE) -> torch.Tensor:
    """One 3 x size x size picture: the horse at a random scale, place and facing, on noisy grass;
    brown, or with black and white stripes at a random angle and phase."""
    from PIL import Image

    big = 4 * size
    mask = Image.fromarray(_horse_mask().astype(np.uint8) * 255)
    width = int(big * rng.uniform(0.6, 0.95))
    mask = mask.resize((width, int(width * mask.height / mask.width)), Image.Resampling.BILINEAR)
    if rng.rand() < 0.5:
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    canvas = Image.new("L", (big, big))
    canvas.paste(mask, (rng.randint(0, big - mask.width + 1), rng.randint(0, big - mask.height + 1)))
    alpha = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255
    grass = np.array([70, 140, 60]) + rng.normal(0, 12, (size, size, 3))
    if zebra:
        yy, xx = np.mgrid[0:size, 0:size]
        angle, phase = rng.uniform(-0.6, 0.6), rng.uniform(0, 2 * np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / 4 + phase) > 0
        coat = np.where(stripes[..., None], 235.0, 25.0) * np.ones(3)
    else:
        coat = np.array([140, 90, 50]) + rng.normal(0, 8, (size, size, 3))
    picture = alpha * coat + (1 - alpha) * grass
    return torch.from_numpy(np.clip(np.rint(picture), 0, 255).astype(np.uint8)).permute(2, 0, 1)


def stroke_width(images: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels of each image: ink area over skeleton length (ink: >= 128)."""
    from skimage.morphology import thin as skeleton

    ink = (images[:, 0] >= 128).numpy()
    return torch.tensor([m.sum() / max(1, skeleton(m).sum()) for m in ink], dtype=torch.float64)
