"""Terms added to D's and G's objectives, beside the loss's own (losses.py).

Each term is an object that the step asks, at each D or G evaluation, for its share of the
objective; the step adds what it gets and backpropagates the sum, so a regulariser is a term and
never a new branch of the step. A term sees D's logits and flattened features of the batch the
step just evaluated (no second forward pass), or, for a penalty on other points (WGAN-GP), makes
its own D call through `gan.step.d_logits`.

- R1 (Mescheder et al. 2018): gamma/2 * E_x ||grad_x D(x)||^2 on real images.
- WGAN-GP (Gulrajani et al. 2017): lambda * E (||grad D(x_hat)||_2 - 1)^2 at random points
  x_hat = e x + (1 - e) G(z), e ~ U(0, 1) per image, on the line between a real and a fake image.
- AC-GAN (Odena et al. 2017): D's classifier's cross-entropy on real images (their labels) and on
  fakes (the labels G was given) for D; on fakes for G.
- InfoGAN (Chen et al. 2016), G's side: lambda * L_I, the negated information bound of the codes
  G was given, read by Q from D's features of G(z, c). Q's own update is step (3) of the step.
  With `info_invariance`, also Q's reading of the categorical code from a transformed copy of
  half the fakes (gan/invariance.py), its own D call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge.gan.invariance import invariance_loss
from ganforge.gan.latents import Latent
from ganforge.gan.models.conditioning import info_loss

Losses = dict[str, torch.Tensor]  # term name -> its (weighted) share of the objective


def input_gradient(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """d(sum of logits)/d(images), kept in the graph so that a penalty on it can be trained."""
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.flatten(1)  # B x C*H*W


class Term:
    """A share of D's objective on real or fake batches, on pairs of them, or of G's objective."""

    name = "term"
    grad_real = False  # needs the gradient of D's logits with respect to the real images

    def d_real(self, run, images, labels, logits, feats) -> torch.Tensor | None:
        return None

    def d_fake(self, run, images, labels, logits, feats) -> torch.Tensor | None:
        return None

    def d_pair(self, run, real, fake, labels) -> torch.Tensor | None:
        return None

    def g(self, run, fake, latent: Latent, logits, feats) -> torch.Tensor | None:
        return None


class R1(Term):
    name, grad_real = "r1", True

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def d_real(self, run, images, labels, logits, feats) -> torch.Tensor:
        return 0.5 * self.gamma * input_gradient(logits, images).square().sum(1).mean()


class GradientPenalty(Term):
    name = "gp"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def d_pair(self, run, real, fake, labels) -> torch.Tensor:
        from ganforge.gan.step import d_logits

        n = min(real.shape[0], fake.shape[0])  # a short last real batch meets as many fakes
        real, fake = real[:n].detach(), fake[:n].detach()
        e = torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype)
        points = (e * real + (1 - e) * fake).requires_grad_(True)
        logits = d_logits(run, points, None if labels is None else labels[:n])
        return self.weight * (input_gradient(logits, points).norm(2, dim=1) - 1).square().mean()


class ACGAN(Term):
    name = "ac"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def _ce(self, run, feats, labels) -> torch.Tensor:
        return self.weight * F.cross_entropy(run.D.classifier(feats).float(), labels)

    def d_real(self, run, images, labels, logits, feats) -> torch.Tensor:
        return self._ce(run, feats, labels)

    def d_fake(self, run, images, labels, logits, feats) -> torch.Tensor:
        return self._ce(run, feats, labels)

    def g(self, run, fake, latent: Latent, logits, feats) -> torch.Tensor:
        return self._ce(run, feats, latent["labels"])


class InfoG(Term):
    name = "info"

    def __init__(self, weight: float, categorical: int) -> None:
        self.weight, self.categorical = weight, categorical

    def g(self, run, fake, latent: Latent, logits, feats) -> torch.Tensor:
        cat, cont = info_loss(run.Q(feats), latent["codes"], self.categorical)
        return self.weight * (cat + cont)


class InfoInvariance(Term):
    """InfoGAN with `info_invariance`: Q's reading of the categorical code from a transformed copy
    of half the fakes (gan/invariance.py), G's side."""
    name = "info_inv"

    def __init__(self, weight: float, categorical: int) -> None:
        self.weight, self.categorical = weight, categorical

    def g(self, run, fake, latent: Latent, logits, feats) -> torch.Tensor:
        return self.weight * invariance_loss(run, fake, latent, self.categorical)


class Terms:
    """The terms a run's config turns on, asked together."""

    def __init__(self, terms: list[Term]) -> None:
        self.terms = terms
        self.grad_real = any(t.grad_real for t in terms)

    @classmethod
    def from_config(cls, cfg) -> "Terms":
        terms: list[Term] = []
        if cfg.r1_gamma > 0:
            terms.append(R1(cfg.r1_gamma))
        if cfg.gp_lambda > 0:
            terms.append(GradientPenalty(cfg.gp_lambda))
        if cfg.conditional == "acgan":
            terms.append(ACGAN(cfg.acgan_weight))
        if cfg.info_categorical or cfg.info_continuous:
            terms.append(InfoG(cfg.info_lambda, cfg.info_categorical))
        if cfg.info_categorical and cfg.info_invariance:
            terms.append(InfoInvariance(cfg.info_lambda, cfg.info_categorical))
        return cls(terms)

    def d(self, side: str, run, images, labels, logits, feats, pair=None) -> Losses:
        """D's extra shares on a `side` ("real" or "fake") batch; `pair` = (real, fake, labels)
        adds the pair terms (asked once per D update)."""
        out: Losses = {}
        for t in self.terms:
            value = (t.d_real if side == "real" else t.d_fake)(run, images, labels, logits, feats)
            if value is not None:
                out[f"d_{t.name}"] = value
            if pair is not None:
                value = t.d_pair(run, *pair)
                if value is not None:
                    out[f"d_{t.name}"] = out.get(f"d_{t.name}", 0) + value
        return out

    def g(self, run, fake, latent: Latent, logits, feats) -> Losses:
        out: Losses = {}
        for t in self.terms:
            value = t.g(run, fake, latent, logits, feats)
            if value is not None:
                out[f"g_{t.name}"] = value
        return out


def total(loss: torch.Tensor, extras: Losses) -> torch.Tensor:
    """The objective: the loss's own term plus every extra share."""
    return loss + sum(extras.values()) if extras else loss


def merge(*parts: Losses) -> Losses:
    """Shares of several evaluations (a separate D update's real and fake steps), summed by name,
    detached for the log."""
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out[k] + v.detach() if k in out else v.detach()
    return out
