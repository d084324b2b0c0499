"""InfoGAN's categorical code, read back through transforms that keep a digit's class.

InfoGAN's information term asks Q to read the categorical value from G(z, c), and nothing in it
says what the values should mean: two values that draw the same digit upright and slanted, or thin
and thick, are as readable as two values that draw different digits. On MNIST that is how the
code misses classes: the values go to styles of 1 or 9 and 4, 7 and 9 share what is left.

`info_invariance=rotation,thickness` adds a second reading of the categorical code. Q must name
the value of a generated image also from a copy of it that is rotated and thickened or thinned at
random, so a value that only sets the slant or the stroke width cannot be told from its twin and
stops paying; what those transforms keep is the class. The continuous codes are still read from
the image as drawn, so they can carry the slant and the width. This is the transformation-
consistency idea of Elastic-InfoGAN (Ojha et al. 2019), as a cross-entropy on the transformed copy.

The term reads the first half of the batch (one more pass of D's trunk over half the fakes, in
G's phase and in Q's), adds lambda * its cross-entropy to both objectives, and is logged as
`g_info_inv` and `q_info_inv`. Transforms (parameters per image from torch's RNG, which the run
checkpoints; the background of G's tanh images is -1 and stays -1):

- rotation: an angle from U(-ROTATION_DEGREES, ROTATION_DEGREES) about the centre, bilinear;
- thickness: s from U(-1, 1): x + s (dilate(x) - x) for s > 0, x + |s| (erode(x) - x) for s < 0,
  dilation and erosion being a 3x3 max and min.

`info_axes=slant,width` also gives the continuous codes a reading through transforms, to pull
the two apart (without it both often carry some of the slant and some of the width). It names
the axis each continuous code is meant to carry, in order, and each axis is read back from a copy
made by the transform that keeps it: the slant code from a thickened or thinned copy, the width
code from a rotated one. A code that carries the width cannot be read from a copy whose width was
redrawn, and one that carries the slant cannot be read from a copy turned by up to 20 degrees, so
each code pays only for its own axis. With axes named, the copy goes through one transform per
image (image i through the policy's (i mod k)-th), the categorical value is read from all of them
and each named code from the images whose transform keeps its axis; the Gaussian negative
log-likelihood is InfoGAN's own, and the same pass of D's trunk serves both readings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ganforge.errors import ConfigError
from ganforge.gan.augment import apply_names, parse_names
from ganforge.gan.models.conditioning import gaussian_nll

ROTATION_DEGREES = 20.0
BACKGROUND = -1.0  # the low end of G's tanh output: the background of a generated digit


def _rotation(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    angle = (torch.rand(b, device=x.device, dtype=x.dtype) * 2 - 1) * math.radians(ROTATION_DEGREES)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # b x 2 x 3
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample fills what comes in from outside with 0: shift so that 0 is the background.
    return F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + BACKGROUND


def _thickness(x: torch.Tensor) -> torch.Tensor:
    s = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return torch.where(s > 0, x + s * (dilated - x), x - s * (eroded - x))


TRANSFORMS = {"rotation": _rotation, "thickness": _thickness}


def parse_invariance(policy: str) -> tuple[str, ...]:
    """'rotation,thickness' -> the transform names, in the order given; one line if unknown."""
    return parse_names("info_invariance", policy, TRANSFORMS)


def transform(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` (B x C x H x W, background -1) through the policy's transforms, each drawn per image."""
    return apply_names(x, policy, TRANSFORMS)


AXES = {"slant": "thickness", "width": "rotation"}  # an axis, and the transform that keeps it


def parse_axes(axes: str, continuous: int, invariance: tuple[str, ...]) -> tuple[str, ...]:
    """'slant,width' -> the axis of each continuous code, in order; one line if an axis is
    unknown or named twice, there are more axes than codes, or the transform that keeps an axis
    is not in `invariance`."""
    names = parse_names("info_axes", axes, AXES)
    if not names:
        return names
    if len(set(names)) < len(names):
        raise ConfigError(f"bad value info_axes={axes!r}: each axis may be named once")
    if len(names) > continuous:
        raise ConfigError(f"bad value info_axes={axes!r}: {len(names)} axes for {continuous} continuous "
                          "codes; set info_continuous or name fewer axes")
    missing = sorted({AXES[a] for a in names} - set(invariance))
    if missing:
        raise ConfigError(f"info_axes={axes!r} reads its codes through {', '.join(missing)}: add "
                          f"{'it' if len(missing) == 1 else 'them'} to info_invariance "
                          "(e.g. info_invariance=rotation,thickness)")
    return names


def transform_each(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` with image i through the policy's (i mod k)-th transform alone."""
    k = len(policy)
    out = torch.empty_like(x)
    for j, name in enumerate(policy):
        out[j::k] = TRANSFORMS[name](x[j::k])
    return out


def invariance_loss(run, fake: torch.Tensor, latent, categorical: int) -> torch.Tensor:
    """Q's cross-entropy for the categorical values of the first half of `fake`, read from D's
    features of a transformed copy (through DiffAugment, as every D call); with `run.axes`, plus
    each named continuous code's Gaussian negative log-likelihood on the images whose transform
    keeps its axis."""
    from ganforge.gan.step import d_outputs

    n = (fake.shape[0] + 1) // 2
    labels = latent.get("labels")
    copy = transform_each(fake[:n], run.invariance) if run.axes else transform(fake[:n], run.invariance)
    _, feats = d_outputs(run, copy, None if labels is None else labels[:n])
    logits, mean, log_std = run.Q(feats)
    codes = latent["codes"][:n]
    loss = F.cross_entropy(logits.float(), codes[:, :categorical].argmax(1))
    k = len(run.invariance)
    for j, axis in enumerate(run.axes):
        rows = slice(run.invariance.index(AXES[axis]), None, k)
        std = None if log_std is None else log_std[rows, j]
        loss = loss + gaussian_nll(codes[rows, categorical + j], mean[rows, j], std).mean()
    return loss
