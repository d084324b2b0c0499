"""Offline translation datasets made from data already installed, for the demo, the tests and the
measurements. Each gives uint8 N x 1 x 32 x 32 images (MNIST's 28 px padded by 2, as in the GAN
recipes' 32 px data) with the source digit's label:

- `edges2mnist` (paired): Canny edges of a digit -> the digit. The pix2pix "edges2*" task in small.
- `thin2thick` (paired) and `thin2thick-unpaired` (A and B from disjoint halves of the digits): a
  digit thinned to a one-pixel skeleton (scikit-image `thin`) -> the skeleton dilated by a disk of
  radius 1, a known stroke-width change.
- `digits2mnist` (unpaired): scikit-learn's 8 x 8 digits, upsampled -> MNIST digits; a real domain gap.

The splits are mnist5k's (and digits') own: train and test never share a digit.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
BUILTINS = ("edges2mnist", "thin2thick", "thin2thick-unpaired", "digits2mnist")
PAIRED = {"edges2mnist": True, "thin2thick": True, "thin2thick-unpaired": False, "digits2mnist": False}


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
    raise KeyError(name)


def stroke_width(images: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels of each image: ink area over skeleton length (ink: >= 128)."""
    from skimage.morphology import thin as skeleton

    ink = (images[:, 0] >= 128).numpy()
    return torch.tensor([m.sum() / max(1, skeleton(m).sum()) for m in ink], dtype=torch.float64)
