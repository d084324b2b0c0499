"""DiffAugment (Zhao et al. 2020): differentiable augmentations of every image D sees.

D sees real and generated images through the same random transforms, and G's gradient flows back
through them, so D cannot memorise a small dataset while G is never asked to produce augmented
images. `gan.step.d_logits` applies the policy to every D input (real, fake, and the R1 / GP
inputs). Each transform draws its parameters per image from torch's RNG (checkpointed with the run):

- color: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), in that order;
- translation: an integer shift of up to 1/8 of the side in x and y, the vacated pixels zero;
- cutout: a zeroed square of half the side at a random centre (clipped at the borders).
"""

from __future__ import annotations

import torch

from ganforge.errors import ConfigError

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _color(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b,), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b,), device=x.device)
    # Output pixel (i, j) reads input (i - dy, j - dx): an index gather, zero where it falls outside.
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy.view(b, 1, 1)  # b x h x 1
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx.view(b, 1, 1)  # b x 1 x w
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # b x 1 x h x w
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w)
    moved = x.flatten(2).gather(2, flat.expand(-1, x.shape[1], -1)).view_as(x)
    return moved * inside.to(x.dtype)


def _cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - ch // 2  # the square's first row / column
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1) - top  # b x h x 1: row inside the square
    cols = torch.arange(w, device=x.device).view(1, 1, w) - left
    hole = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)  # b x h x w
    return x * (~hole).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def parse_names(option: str, policy: str, table: dict) -> tuple[str, ...]:
    """'a,b' -> the names of `table`'s transforms, in the order given; one line naming `option` if
    one is unknown."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [n for n in names if n not in table]
    if bad:
        raise ConfigError(f"bad value {option}={policy!r}: unknown {', '.join(bad)}; valid: "
                          f"{', '.join(table)} (comma-separated), or empty for none")
    return names


def apply_names(x: torch.Tensor, names: tuple[str, ...], table: dict) -> torch.Tensor:
    """`x` through `table`'s transforms `names`, in order; unchanged for none."""
    for name in names:
        x = table[name](x)
    return x


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> the transform names, in the order given; one line if unknown."""
    return parse_names("diffaugment", policy, TRANSFORMS)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` (B x C x H x W) through the policy's transforms; unchanged for an empty policy."""
    return apply_names(x, policy, TRANSFORMS)
