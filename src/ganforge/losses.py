"""Adversarial objectives as small objects on discriminator logits, chosen once by name (`loss=`):
shared by every task that trains a discriminator (the GANs, translation).

Discriminators always return logits. Sources whose D ends in a sigmoid are reproduced by applying
the sigmoid inside the loss; `clip=True` also reproduces Keras' probability clip to [1e-7, 1 - 1e-7]
(exactly a clamp of the logit to +-log((1 - 1e-7) / 1e-7), with zero gradient outside).
Every term is a mean over the batch; D minimises `d_real + d_fake`, G minimises `g`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ganforge.registry import Registry

KERAS_EPS = 1e-7
LOGIT_BOUND = math.log((1 - KERAS_EPS) / KERAS_EPS)  # the logit of 1 - 1e-7: 16.118...


def bce(logits: torch.Tensor, target: float, clip: bool = False) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label (1 real, 0 fake)."""
    if clip:
        logits = logits.clamp(-LOGIT_BOUND, LOGIT_BOUND)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GANLoss:
    """D's terms on real and on generated images, and G's term on D's logits for G(z)."""

    def __init__(self, clip: bool = False) -> None:
        self.clip = clip

    def d_real(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_fake(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[type[GANLoss]] = Registry("loss")


@LOSSES.register("ns")
class NonSaturating(GANLoss):
    """D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z)) (Goodfellow et al. 2014, sec. 3)."""

    def d_real(self, logits: torch.Tensor) -> torch.Tensor:
        return bce(logits, 1.0, self.clip)  # -log D(x)

    def d_fake(self, logits: torch.Tensor) -> torch.Tensor:
        return bce(logits, 0.0, self.clip)  # -log(1 - D(G(z)))

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return bce(fake_logits, 1.0, self.clip)  # -log D(G(z))


@LOSSES.register("minimax")
class Minimax(NonSaturating):
    """G minimises the game's value itself, log(1 - D(G(z))), as Algorithm 1 is written; its
    gradient vanishes while D rejects the fakes confidently."""

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -bce(fake_logits, 0.0, self.clip)  # log(1 - D(G(z)))


@LOSSES.register("hinge")
class Hinge(GANLoss):
    """D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z)) (the SN-GAN / BigGAN form)."""

    def d_real(self, logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - logits).mean()

    def d_fake(self, logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 + logits).mean()

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


@LOSSES.register("wgan")
class Wasserstein(GANLoss):
    """The critic's estimate of the Wasserstein-1 distance (Arjovsky et al. 2017): D minimises
    E[D(G(z))] - E[D(x)], G minimises -E[D(G(z))]. D must be kept 1-Lipschitz: with the gradient
    penalty (`gp_lambda`, WGAN-GP) or spectral normalisation."""

    def d_real(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.float().mean()

    def d_fake(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().mean()

    def g(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()


def make_loss(name: str, clip: bool = False) -> GANLoss:
    """The named loss, built once for a run."""
    return LOSSES.get(name)(clip)
