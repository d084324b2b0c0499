"""Pixels between storage (uint8) and models (floats in a recipe's range), in one place.

`pm1` is x/127.5 - 1, in [-1, 1]: what tanh generators make and every recipe trains on by default.
`01` is x/255, in [0, 1]: seed 000's literal `imgae = image*2-1` typo trains on this range.
"""

from __future__ import annotations

import torch

PIXEL_RANGES = ("pm1", "01")


def normalize(images_u8: torch.Tensor, pixel_range: str = "pm1") -> torch.Tensor:
    """uint8 [0, 255] -> float32 in the range (on the tensor's own device)."""
    x = images_u8.to(torch.float32)
    return x / 127.5 - 1.0 if pixel_range == "pm1" else x / 255.0


def to_uint8(images: torch.Tensor, pixel_range: str = "pm1") -> torch.Tensor:
    """Model output -> uint8 N x C x H x W on the CPU; values outside the range are clipped."""
    x = images.detach().float().cpu()
    x = (x + 1) * 127.5 if pixel_range == "pm1" else x * 255.0
    return x.round().clamp(0, 255).to(torch.uint8)
