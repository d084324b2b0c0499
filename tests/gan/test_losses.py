"""GAN losses against values worked out by hand: a wrong sign or a swapped label fails here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.losses import LOGIT_BOUND, LOSSES, make_loss

X = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0], dtype=torch.float64)


def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def test_non_saturating_is_softplus():
    ns = make_loss("ns")
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    assert torch.allclose(ns.d_real(X), F.softplus(-X).mean())
    assert torch.allclose(ns.d_fake(X), F.softplus(X).mean())
    assert torch.allclose(ns.g(X), F.softplus(-X).mean())
    assert math.isclose(float(ns.d_real(torch.zeros(3))), math.log(2), rel_tol=1e-6)  # D(x) = 1/2
    # D gains by raising real logits and lowering fake ones; G gains by raising D's logit on fakes.
    assert (_grad(ns.d_real, X) < 0).all() and (_grad(ns.d_fake, X) > 0).all() and (_grad(ns.g, X) < 0).all()


def test_minimax_is_the_game_value():
    mm = make_loss("minimax")
    # G minimises log(1 - D(G(z))) = -softplus(x): negative, and flat where D rejects the fakes.
    assert torch.allclose(mm.g(X), torch.log1p(-torch.sigmoid(X)).mean())
    assert float(mm.g(X)) < 0
    saturated = _grad(mm.g, torch.tensor([-10.0], dtype=torch.float64))
    non_saturating = _grad(make_loss("ns").g, torch.tensor([-10.0], dtype=torch.float64))
    assert abs(float(saturated)) < 1e-4 < abs(float(non_saturating))  # why ns is the default
    assert torch.allclose(mm.d_real(X), make_loss("ns").d_real(X))


def test_hinge_margins():
    hinge = make_loss("hinge")
    one = torch.ones(1)
    assert float(hinge.d_real(one)) == 0.0 and float(hinge.d_real(-one)) == 2.0
    assert float(hinge.d_fake(-one)) == 0.0 and float(hinge.d_fake(one)) == 2.0
    assert float(hinge.g(torch.tensor([1.0, 3.0]))) == -2.0
    # Past the margin a correctly classified sample gives D no gradient.
    assert float(_grad(hinge.d_real, torch.tensor([1.5]))) == 0.0
    assert float(_grad(hinge.d_real, torch.tensor([0.5]))) == -1.0


def test_keras_probability_clip_boundary():
    """Keras clips sigmoid outputs to [1e-7, 1 - 1e-7]: the loss of a confidently wrong D is
    -log(1e-7) and its gradient is zero beyond the clip."""
    assert math.isclose(LOGIT_BOUND, math.log((1 - 1e-7) / 1e-7))
    clipped, plain = make_loss("ns", clip=True), make_loss("ns")
    far = torch.tensor([30.0], dtype=torch.float64)
    assert math.isclose(float(clipped.d_fake(far)), -math.log(1e-7), rel_tol=1e-9)
    assert float(plain.d_fake(far)) == pytest.approx(30.0, rel=1e-9)  # unclipped: softplus(30)
    assert float(_grad(clipped.d_fake, far)) == 0.0 and float(_grad(plain.d_fake, far)) > 0.99
    inside = torch.tensor([3.0], dtype=torch.float64)
    assert float(clipped.d_fake(inside)) == float(plain.d_fake(inside))


def test_every_registered_loss_is_finite_and_differentiable():
    for name in LOSSES:
        loss = make_loss(name)
        for term in (loss.d_real, loss.d_fake, loss.g):
            g = _grad(term, X)
            assert torch.isfinite(term(X)) and torch.isfinite(g).all() and g.abs().sum() > 0, name
