"""What turns any model family into a class-conditional or InfoGAN model, without touching it.

- G: :class:`ConditionalGenerator` wraps a family's generator built for a wider input vector. Its
  :class:`LatentInput` joins z, the class embedding (cGAN, Mirza & Osindero 2014) and InfoGAN's
  codes into that vector, so every family takes `(z, labels, codes)` the same way.
- D: :func:`condition_discriminator` adds a projection embedding (Miyato & Koyama 2018), D(x, y) =
  head(phi(x)) + <embed(y), phi(x)>, or instead an auxiliary classifier on phi(x) (AC-GAN,
  Odena et al. 2017). phi is D's trunk, flattened: because every family's head is linear in it,
  the projection is exactly a class-specific head.
- :class:`QHead`: InfoGAN's Q network on D's features (Chen et al. 2016, MNIST appendix): FC 128,
  BN, leaky ReLU, then the categorical logits and the continuous codes' Gaussian means (and
  log-standard deviations when learned).

An unconditional model gets none of this, so its weights and checkpoints are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CONDITIONING = ("none", "projection", "acgan")


class LatentInput(nn.Module):
    """(z, labels, codes) -> G's input vector [z, embed(labels), codes].

    Called without labels (or codes), it joins their mean: the mean class embedding, and the codes'
    prior means (uniform categorical weights, zero continuous codes). Training, sampling and
    evaluation always pass them; the mean only gives a direct `G(z)` call a defined meaning."""

    def __init__(self, latent_dim: int, num_classes: int = 0, embed_dim: int = 0, categorical: int = 0,
                 continuous: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.categorical, self.continuous = categorical, continuous
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        mean = torch.cat([torch.full((categorical,), 1.0 / max(categorical, 1)), torch.zeros(continuous)])
        self.register_buffer("code_mean", mean, persistent=False)

    @property
    def code_dim(self) -> int:
        return self.categorical + self.continuous

    @property
    def out_dim(self) -> int:
        return self.latent_dim + (self.embed.embedding_dim if self.embed is not None else 0) + self.code_dim

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> torch.Tensor:
        parts = [z.flatten(1)]  # B x latent_dim
        if self.embed is not None:
            e = self.embed(labels) if labels is not None else self.embed.weight.mean(0).expand(z.shape[0], -1)
            parts.append(e.to(z.dtype))  # B x embed_dim
        if self.code_dim:
            c = codes if codes is not None else self.code_mean.expand(z.shape[0], -1)
            parts.append(c.to(z.dtype))  # B x (categorical + continuous)
        return torch.cat(parts, 1)  # B x out_dim


class ConditionalGenerator(nn.Module):
    """A family's generator (built for `inputs.out_dim` inputs) behind the shared input joiner."""

    def __init__(self, inputs: LatentInput, net: nn.Module) -> None:
        super().__init__()
        self.inputs, self.net = inputs, net

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.inputs(z, labels, codes))  # C x H x W images


@torch.no_grad()
def feature_dim(discriminator: nn.Module, channels: int, image_size: int) -> int:
    """Width of D's flattened trunk output for one image of this shape."""
    was = discriminator.training
    discriminator.eval()  # BatchNorm on running statistics: a batch of 1 is fine
    try:
        return int(discriminator.features(torch.zeros(1, channels, image_size, image_size)).flatten(1).shape[1])
    finally:
        discriminator.train(was)


def condition_discriminator(discriminator: nn.Module, mode: str, num_classes: int, channels: int,
                            image_size: int) -> nn.Module:
    """`projection`: a class embedding whose inner product with the features joins the logit.
    `acgan`: D's logit stays unconditional, and a classifier on the features predicts the class."""
    if mode == "none":
        return discriminator
    width = feature_dim(discriminator, channels, image_size)
    if mode == "projection":
        discriminator.embed = nn.Embedding(num_classes, width)
        # Small, like the head it adds to: D starts (nearly) unconditional.
        nn.init.normal_(discriminator.embed.weight, 0.0, 0.02)
    else:
        discriminator.classifier = nn.Linear(width, num_classes)
    return discriminator


class QHead(nn.Module):
    """InfoGAN's Q on D's (flattened) features: categorical logits, Gaussian means, log-stds."""

    def __init__(self, in_features: int, categorical: int, continuous: int, learned_std: bool = False,
                 hidden: int = 128, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.categorical, self.continuous, self.learned_std = categorical, continuous, learned_std
        out = categorical + continuous * (2 if learned_std else 1)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden, bias=False),   # B x 128
            nn.BatchNorm1d(hidden, bn_eps, bn_momentum), nn.LeakyReLU(0.1, True),
            nn.Linear(hidden, out),                                     # B x (K + C [+ C])
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.net(features)
        k, c = self.categorical, self.continuous
        log_std = out[:, k + c:] if self.learned_std else None
        return out[:, :k], out[:, k:k + c], log_std


def info_loss(q: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], codes: torch.Tensor,
              categorical: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The negated variational lower bound on I(c; G(z, c)) without its constant H(c): the
    categorical code's cross-entropy and the continuous codes' Gaussian negative log-likelihood
    (summed over codes, mean over the batch; a fixed std of 1 when Q does not learn it, which
    leaves 0.5 (c - mu)^2 + 0.5 log 2 pi). Returns (categorical term, continuous term)."""
    logits, mean, log_std = q
    zero = codes.new_zeros(())
    cat = F.cross_entropy(logits.float(), codes[:, :categorical].argmax(1)) if categorical else zero
    if mean.shape[1] == 0:
        return cat, zero
    return cat, gaussian_nll(codes[:, categorical:], mean, log_std).sum(1).mean()


def gaussian_nll(target: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor | None) -> torch.Tensor:
    """Elementwise -log N(target; mean, std): std = exp(log_std), or 1 when `log_std` is None."""
    error = target.float() - mean.float()
    if log_std is None:
        return 0.5 * error ** 2 + 0.5 * math.log(2 * math.pi)
    log_std = log_std.float()
    return 0.5 * (error * torch.exp(-log_std)) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
