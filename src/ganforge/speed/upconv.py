"""Nearest-neighbour upsampling followed by a convolution, run as one transposed convolution.

Upsampling by an integer factor s repeats each pixel s x s times, so a stride-1 k x k convolution
over the upsampled map reads, for each of the s x s output phases, only a (k+s-1)/s-wide window of
the small map, and several of its taps land on the same small pixel. Adding those taps' weights
first turns the pair into a stride-s transposed convolution with a (k+s-1) x (k+s-1) kernel over
the small map. The result is the same up to float rounding (the weights are summed before they
multiply instead of after), padding included: the zeros around the upsampled map are exactly the
zeros around the small one. For seed 001's x2 upsampling and 3 x 3 kernels that is 16 products per
small pixel instead of 36, and neither the upsampled map nor its gradient is ever stored.

The upsampling module becomes a pass-through and the convolution a subclass that builds the
transposed kernel from its own weight at every call, so parameters, buffers, hooks and checkpoints
stay as they are, and gradients reach the original 3 x 3 weight through the sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_matrix(k: int, s: int, dtype: torch.dtype = torch.float32,
                device: torch.device | None = None) -> torch.Tensor:
    """A (k+s-1, k) 0/1 matrix: tap r of the convolution lands on tap q of the transposed kernel.

    Output pixel s*m + q - P of the transposed convolution (padding P = k-1-p) reads small pixel m
    through tap q; the convolution's tap r reads upsampled pixel t + r - p, which is small pixel m
    exactly when 0 <= q + r - (k-1) <= s-1, whatever the padding p."""
    q = torch.arange(k + s - 1, device=device).view(-1, 1)
    r = torch.arange(k, device=device).view(1, -1)
    d = q + r - (k - 1)
    return ((d >= 0) & (d <= s - 1)).to(dtype)


def upsampled_kernel(weight: torch.Tensor, scale: tuple[int, int]) -> torch.Tensor:
    """The transposed convolution's kernel (C_in, C_out, kh+sh-1, kw+sw-1) for conv weight
    (C_out, C_in, kh, kw) after x`scale` nearest upsampling. Differentiable in `weight`."""
    kh, kw = weight.shape[2:]
    ah = fold_matrix(kh, scale[0], weight.dtype, weight.device)
    aw = fold_matrix(kw, scale[1], weight.dtype, weight.device)
    return torch.einsum("pr,qs,oirs->iopq", ah, aw, weight)


def _scale(module: nn.Module) -> tuple[int, int] | None:
    """The integer (sh, sw) of a nearest-neighbour 2D nn.Upsample, or None."""
    if type(module) is not nn.Upsample or module.mode not in ("nearest", "nearest-exact"):
        return None  # nearest-exact picks the same pixels as nearest for integer factors
    if module.size is not None or module.scale_factor is None:
        return None
    factors = module.scale_factor if isinstance(module.scale_factor, tuple) else (module.scale_factor,) * 2
    if len(factors) != 2 or not all(float(f).is_integer() and f >= 1 for f in factors):
        return None
    return int(factors[0]), int(factors[1])


def _eligible(conv: nn.Module, scale: tuple[int, int]) -> bool:
    """A plain stride-1, zero-padded, ungrouped Conv2d whose kernel makes the fold pay."""
    if type(conv) is not nn.Conv2d or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        return False
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return False
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    if ph > kh - 1 or pw > kw - 1:
        return False
    # Products per small pixel: (k+s-1)^2 against (s*k)^2; a 1x1 kernel gains nothing.
    return (kh + scale[0] - 1) * (kw + scale[1] - 1) * 4 <= 3 * (kh * scale[0]) * (kw * scale[1])


class FoldedUpsample(nn.Upsample):
    """The upsampling the next layer (an UpsampledConv2d) does itself: a pass-through for a batch.
    An unbatched input goes both layers' own way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.ndim == 4 else super().forward(x)


class UpsampledConv2d(nn.Conv2d):
    """The convolution over x`upsample_scale` nearest-upsampled input, taking the small map."""

    upsample_scale: tuple[int, int] = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:  # unbatched: FoldedUpsample has upsampled it as nn.Upsample does
            return super().forward(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        kernel = upsampled_kernel(self.weight, self.upsample_scale)
        return F.conv_transpose2d(x, kernel, self.bias, stride=self.upsample_scale,
                                  padding=(kh - 1 - ph, kw - 1 - pw))


def upsample_conv(*modules: nn.Module, enabled: bool) -> int:
    """Fold every nn.Upsample (nearest, integer factor) that directly precedes an eligible Conv2d
    in an nn.Sequential into that convolution. Returns how many pairs were folded."""
    if not enabled:
        return 0
    # The swap changes the module objects, so each must be used in exactly one place: an Upsample or
    # a convolution that also sits elsewhere (a reused instance) keeps its own behaviour.
    uses: dict[int, int] = {}
    for model in modules:
        for _, m in model.named_modules(remove_duplicate=False):
            uses[id(m)] = uses.get(id(m), 0) + 1
    count = 0
    for model in modules:
        for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            children = list(seq._modules.values())  # in order, repeats included (children() drops them)
            for up, conv in zip(children, children[1:]):
                if up is None or conv is None or uses[id(up)] != 1 or uses[id(conv)] != 1:
                    continue
                scale = _scale(up)
                if scale is None or not _eligible(conv, scale):
                    continue
                up.__class__ = FoldedUpsample
                conv.__class__ = UpsampledConv2d
                conv.upsample_scale = scale
                count += 1
    return count


def upsample_folded(*modules: nn.Module) -> bool:
    """Whether any upsampling in these modules has been folded into its convolution."""
    return any(isinstance(m, FoldedUpsample) for model in modules for m in model.modules())
