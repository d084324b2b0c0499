"""Building blocks and weight initialisers shared by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge.registry import Registry


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


class Discriminator(nn.Module):
    """D(x) = head(features(x)): a trunk that maps images to features, and a head that maps them to
    one logit per image. Every D call site can reach the features (projection conditioning, an
    InfoGAN Q head, feature matching) without knowing the architecture.

    Subclasses list their layers in order; the last one is the head. Checkpoints written before the
    split (one `net` Sequential) still load: their `net.i` keys are renamed on load."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*layers[:-1])
        self.head = nn.Sequential(layers[-1])
        # A conditional D (models/conditioning.py) attaches a projection embedding and, for
        # AC-GAN, a classifier on the flattened features.
        self.embed: nn.Embedding | None = None
        self.classifier: nn.Linear | None = None
        self._register_load_state_dict_pre_hook(self._rename_legacy_keys)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                with_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """B logits (and the B x F flattened features when `with_features`). With labels, a
        projection D adds <embed(y), phi(x)>."""
        h = self.features(x)
        logits = self.head(h).reshape(-1)  # B logits
        flat = h.flatten(1)  # B x F
        if self.embed is not None and labels is not None:
            logits = logits + (self.embed(labels).to(flat.dtype) * flat).sum(1)
        return (logits, flat) if with_features else logits

    def _rename_legacy_keys(self, state_dict: dict, prefix: str, *args) -> None:
        split = len(self.trunk)
        for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
            index, _, rest = key[len(prefix) + 4:].partition(".")
            i = int(index)
            new = f"{prefix}trunk.{i}.{rest}" if i < split else f"{prefix}head.{i - split}.{rest}"
            state_dict[new] = state_dict.pop(key)


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


INITS: Registry = Registry("init scheme")
INITS.register("keras", init_keras)
INITS.register("dcgan", init_dcgan)
INITS.register("torch", lambda module: None)  # PyTorch's own per-layer defaults


def init_weights(module: nn.Module, scheme: str) -> None:
    """Apply the named scheme; layers tagged `keras_init='he_normal'` keep their Keras initialiser."""
    INITS.get(scheme)(module)
    for m in module.modules():
        if getattr(m, "keras_init", None) == "he_normal" and scheme == "keras":
            he_normal_(m.weight)


def he(layer: nn.Module) -> nn.Module:
    """Mark a layer as Keras `kernel_initializer='he_normal'` (seed 000)."""
    layer.keras_init = "he_normal"
    return layer


def spectral_norm_all(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight in `module`:
    each weight is divided by its largest singular value, estimated by one power iteration per
    forward pass (torch's parametrization; the estimate's vectors are buffers, so they checkpoint)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, _WEIGHTED):
            spectral_norm(m)
    return module
