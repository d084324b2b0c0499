"""GAN losses as small pure functions of discriminator logits, chosen by name.

Discriminators always return logits. Sources whose D ends in a sigmoid are reproduced by applying
the sigmoid inside the loss; `clip=True` also reproduces Keras' probability clip to [1e-7, 1 - 1e-7]
(exactly a clamp of the logit to +-log((1 - 1e-7) / 1e-7), with zero gradient outside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KERAS_EPS = 1e-7
_LOGIT_BOUND = math.log((1 - KERAS_EPS) / KERAS_EPS)


def _clip(logits: torch.Tensor, clip: bool) -> torch.Tensor:
    return logits.clamp(-_LOGIT_BOUND, _LOGIT_BOUND) if clip else logits


def bce(logits: torch.Tensor, target: float, clip: bool = False) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label (1 real, 0 fake)."""
    logits = _clip(logits, clip)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_real(name: str, real_logits: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """D's term on real images. BCE: -log D(x); hinge: relu(1 - D(x))."""
    if name == "hinge":
        return F.relu(1.0 - real_logits).mean()
    return bce(real_logits, 1.0, clip)


def d_loss_fake(name: str, fake_logits: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """D's term on generated images. BCE: -log(1 - D(G(z))); hinge: relu(1 + D(G(z)))."""
    if name == "hinge":
        return F.relu(1.0 + fake_logits).mean()
    return bce(fake_logits, 0.0, clip)


def g_loss(name: str, fake_logits: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """G's objective on D's logits for G(z).

    ns:      -log D(G(z))              (non-saturating, Goodfellow et al. sec. 3)
    minimax:  log(1 - D(G(z)))         (the paper's game value, minimised by G)
    hinge:   -D(G(z))
    """
    if name == "ns":
        return bce(fake_logits, 1.0, clip)
    if name == "minimax":
        return -bce(fake_logits, 0.0, clip)
    if name == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {name!r}")


LOSSES = ("ns", "minimax", "hinge")
