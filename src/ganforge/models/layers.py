"""Building blocks and weight initialisers shared by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn


def batch_norm(features: int, momentum: float, eps: float, dims: int = 2) -> nn.Module:
    """BatchNorm with the recipe's momentum/epsilon (Keras 0.99/1e-3 is PyTorch 0.01/1e-3)."""
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
    return cls(features, eps=eps, momentum=momentum)


class Reshape(nn.Module):
    """View a flat vector as C x H x W (Keras `Reshape`, channels first)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def conv_same(c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """Keras `Conv2D(padding='same')`: k//2 padding keeps (s=1) or halves (s=2, ceil) the size."""
    return nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=bias)


def convt_same(c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True) -> nn.ConvTranspose2d:
    """Keras `Conv2DTranspose(padding='same')`: output = input * stride."""
    return nn.ConvTranspose2d(c_in, c_out, k, stride, padding=k // 2,
                              output_padding=stride - 1, bias=bias)


# --- initialisers -------------------------------------------------------------------------------

_WEIGHTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras `he_normal`: truncated normal (2 std) with stddev sqrt(2 / fan_in) after truncation."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    # 0.8796... is the std of a unit normal truncated at +-2; Keras divides by it so the
    # truncated draw still has the intended variance.
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def init_keras(module: nn.Module) -> None:
    """Keras defaults: glorot_uniform kernels, zero biases, BN gamma 1 / beta 0."""
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_dcgan(module: nn.Module) -> None:
    """Radford et al.: conv/linear weights N(0, 0.02), BN gamma N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def init_weights(module: nn.Module, scheme: str) -> None:
    """Apply the named scheme; layers tagged `keras_init='he_normal'` keep their Keras initialiser."""
    if scheme == "keras":
        init_keras(module)
    elif scheme == "dcgan":
        init_dcgan(module)
    elif scheme != "torch":
        raise ValueError(f"unknown init scheme {scheme!r}")
    for m in module.modules():
        if getattr(m, "keras_init", None) == "he_normal" and scheme == "keras":
            he_normal_(m.weight)


def he(layer: nn.Module) -> nn.Module:
    """Mark a layer as Keras `kernel_initializer='he_normal'` (seed 000)."""
    layer.keras_init = "he_normal"
    return layer
