"""Conditional models of every family, InfoGAN's Q, and the objective terms and regularisers, with
known values or finite differences."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ganforge.config import apply_overrides
from ganforge.errors import ConfigError
from ganforge.gan.augment import diff_augment, parse_policy
from ganforge.gan.invariance import (ROTATION_DEGREES, invariance_loss, parse_axes, parse_invariance, transform,
                                     transform_each)
from ganforge.gan.latent_metrics import slant, stroke_width
from ganforge.gan.latents import LatentSpec, apply_generator
from ganforge.losses import make_loss
from ganforge.gan.recipes import RECIPES, get_recipe
from ganforge.gan.terms import ACGAN, R1, GradientPenalty, Terms
from ganforge.gan.models import MODELS, build_models, build_q, gan_models
from ganforge.gan.models.conditioning import info_loss
from ganforge.gan.models.layers import Discriminator, spectral_norm_all


def _conditional(model: str, mode: str):
    """The smallest config of `model` with `mode` conditioning on 3 classes."""
    cfg = next((r.config for r in RECIPES.values() if r.config.model == model), get_recipe("default"))
    sizes = MODELS.get(model).sizes
    small = {"base_filters": 4} if model in ("dcgan", "default") else {}
    return apply_overrides(cfg, {"model": model, "image_size": min(sizes) if sizes else 28, "conditional": mode,
                                 "num_classes": 3, "info_categorical": 0, "info_continuous": 0, **small})


@pytest.mark.parametrize("mode", ["projection", "acgan"])
@pytest.mark.parametrize("model", gan_models())
def test_every_family_is_conditional_forward_and_backward(model, mode):
    cfg = _conditional(model, mode)
    torch.manual_seed(0)
    G, D = build_models(cfg)
    G.eval(), D.eval()  # dropout and batch statistics would blur the label's effect
    z, labels = torch.randn(4, cfg.latent_dim), torch.tensor([0, 1, 2, 0])
    x = G(z, labels)
    assert x.shape == (4, cfg.channels, cfg.image_size, cfg.image_size)
    # The class changes G's image for the same z, and (projection) D's logit for the same image.
    assert not torch.allclose(G(z, torch.tensor([1, 2, 0, 1])), x)
    logits, feats = D(x, labels, with_features=True)
    assert logits.shape == (4,) and feats.shape[0] == 4
    if mode == "projection":
        expected = D.head(D.features(x)).reshape(-1) + (D.embed(labels) * feats).sum(1)
        assert torch.allclose(logits, expected, atol=1e-5)
        assert not torch.allclose(D(x, torch.tensor([1, 2, 0, 1])), logits)
    else:
        assert D.classifier(feats).shape == (4, 3) and torch.equal(D(x, labels), D(x))
    G.train(), D.train()
    loss = D(G(z, labels), labels).square().mean() + (ACGAN(1.0)._ce(SimpleNamespace(D=D), feats, labels)
                                                        if mode == "acgan" else 0)
    loss.backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(G.inputs.embed.weight.grad.abs().sum()) > 0


def test_unconditional_models_keep_their_weights_names():
    cfg = get_recipe("default")
    G, D = build_models(cfg)
    assert not any("embed" in k or "inputs" in k for k in list(G.state_dict()) + list(D.state_dict()))


def test_infogan_q_forward_backward_and_the_information_term():
    cfg = get_recipe("infogan-mnist")
    torch.manual_seed(0)
    G, D = build_models(cfg)
    Q = build_q(cfg, D)
    spec = LatentSpec.from_config(cfg)
    assert (spec.latent_dim, spec.categorical, spec.continuous) == (62, 10, 2)
    assert G.inputs.out_dim == 74  # the paper's G input
    latent = spec.sample(6, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(latent["codes"][:, :10].sum(1), torch.ones(6))
    assert latent["codes"][:, 10:].abs().max() <= 1
    fake = apply_generator(G, latent)
    _, feats = D(fake, with_features=True)
    assert feats.shape == (6, 1024)  # Q reads D's FC 1024 trunk
    q = Q(feats)
    assert q[0].shape == (6, 10) and q[1].shape == (6, 2) and q[2] is None
    cat, cont = info_loss(q, latent["codes"], 10)
    (cat + cont).backward()
    for net in (G, D.trunk, Q):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad is None for p in D.head.parameters())  # the bound does not train D's head


def test_information_term_known_values():
    codes = torch.tensor([[0.0, 1.0, 0.0, 0.5, -0.5], [1.0, 0.0, 0.0, 0.0, 1.0]])
    uniform = (torch.zeros(2, 3), codes[:, 3:].clone(), None)  # Q: no idea of the class, exact means
    cat, cont = info_loss(uniform, codes, 3)
    assert math.isclose(float(cat), math.log(3), rel_tol=1e-6)
    assert math.isclose(float(cont), 2 * 0.5 * math.log(2 * math.pi), rel_tol=1e-6)  # two codes
    off = (torch.tensor([[0.0, 50.0, 0.0], [50.0, 0.0, 0.0]]), codes[:, 3:] + 1, torch.full((2, 2), math.log(2)))
    cat, cont = info_loss(off, codes, 3)
    assert float(cat) < 1e-6
    per_code = 0.5 * (1 / 2) ** 2 + math.log(2) + 0.5 * math.log(2 * math.pi)  # N(c; mu + 1, sigma = 2)
    assert math.isclose(float(cont), 2 * per_code, rel_tol=1e-6)


def _linear_run(w: torch.Tensor, b: float = 0.3):
    """A run whose D is the linear map x -> w.x + b (trunk: flatten; head: the linear layer)."""
    head = nn.Linear(w.numel(), 1)
    with torch.no_grad():
        head.weight.copy_(w.reshape(1, -1))
        head.bias.fill_(b)
    return _run_with_d(Discriminator([nn.Flatten(), head]))


def _run_with_d(D: nn.Module) -> SimpleNamespace:
    """The part of a GanRun the D terms use: its D, reached by name as a phase reaches it."""
    return SimpleNamespace(D=D, net={"D": D}.__getitem__, augment=())


def test_wgan_r1_and_gradient_penalty_known_values():
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # |w| = 5
    run = _linear_run(w)
    real = torch.randn(5, 1, 2, 2, requires_grad=True)
    fake = torch.randn(5, 1, 2, 2)
    logits = run.D(real)
    # R1: gamma / 2 * |grad_x D|^2 = gamma / 2 * |w|^2 for a linear D
    assert math.isclose(float(R1(10.0).d_real(run, real, None, logits, None).detach()), 5 * 25, rel_tol=1e-6)
    # WGAN-GP: lambda * (|grad D(x_hat)| - 1)^2 = lambda * (5 - 1)^2 wherever x_hat is
    assert math.isclose(float(GradientPenalty(10.0).d_pair(run, real, fake, None).detach()), 160, rel_tol=1e-6)
    wgan = make_loss("wgan")
    scores = torch.tensor([1.0, 2.0, 6.0])
    assert float(wgan.d_real(scores)) == -3.0 and float(wgan.d_fake(scores)) == 3.0 and float(wgan.g(scores)) == -3.0


class _Net(nn.Module):
    """tanh(h W1' + b1) W2' + b2 with weights given per call, so gradcheck can vary them."""

    weights: tuple = ()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = self.weights
        return torch.tanh(h @ w1.T + b1) @ w2.T + b2


def test_penalties_have_the_gradients_finite_differences_give():
    torch.manual_seed(0)
    net = _Net()
    run = _run_with_d(Discriminator([nn.Flatten(), net]))
    real = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(3, 1, 2, 2, dtype=torch.float64)

    def penalty(*weights):
        net.weights = weights
        x = real.clone().requires_grad_(True)
        torch.manual_seed(1)  # the same interpolation points on every call
        return R1(2.0).d_real(run, x, None, run.D(x), None) + GradientPenalty(3.0).d_pair(run, real, fake, None)

    shapes = [(3, 4), (3,), (1, 3), (1,)]
    weights = tuple(torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes)
    assert torch.autograd.gradcheck(penalty, weights, eps=1e-6, atol=1e-5)


def test_terms_follow_the_config():
    base = get_recipe("default")
    assert Terms.from_config(base).terms == []
    names = [t.name for t in Terms.from_config(apply_overrides(base, ["r1_gamma=1", "gp_lambda=10"])).terms]
    assert names == ["r1", "gp"]
    assert Terms.from_config(apply_overrides(base, ["r1_gamma=1"])).grad_real


def _u8(x: torch.Tensor) -> torch.Tensor:
    """G's [-1, 1] images as the uint8 images the measures take."""
    return ((x.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _bar(n: int, width: int = 2) -> torch.Tensor:
    """n 28x28 images of a vertical bar `width` pixels wide: ink 1 on a background of -1."""
    x = torch.full((n, 1, 28, 28), -1.0)
    x[:, :, 5:23, 14 - width // 2:14 - width // 2 + width] = 1.0
    return x


def test_invariance_transforms_turn_and_thicken_a_stroke_and_keep_the_background():
    torch.manual_seed(0)
    bars = _bar(200)
    turned = transform(bars, ("rotation",))
    angles = slant(_u8(turned))  # the measure eval uses: degrees from the vertical
    assert abs(slant(_u8(bars))).max() < 1e-3
    assert abs(angles).max() <= ROTATION_DEGREES + 1 and abs(angles).max() > ROTATION_DEGREES / 2
    assert (angles > 1).any() and (angles < -1).any()
    corners = turned[:, :, :3, :3]
    assert torch.equal(corners, torch.full_like(corners, -1.0))  # what comes in from outside is background
    thick = transform(_bar(200, width=4), ("thickness",))
    widths, base = stroke_width(_u8(thick)), float(stroke_width(_u8(_bar(1, width=4)))[0])
    assert widths.max() > base + 1 and widths.min() < base - 1  # thicker and thinner, each drawn per image
    ink = (thick > 0).flatten(1).sum(1)
    assert ink.min() > 0  # thinned, never erased
    x = bars.clone().requires_grad_(True)
    out = transform(x, parse_invariance("rotation,thickness"))
    assert out.shape == x.shape and out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
    out.sum().backward()
    assert float(x.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="unknown flip; valid: rotation, thickness"):
        apply_overrides(get_recipe("infogan-mnist"), ["info_invariance=rotation,flip"])
    with pytest.raises(ConfigError, match="needs a categorical code"):
        apply_overrides(get_recipe("default"), ["info_invariance=rotation"])


def test_invariance_term_reads_half_the_fakes_through_the_transforms():
    cfg = apply_overrides(get_recipe("infogan-mnist"), ["info_invariance=rotation,thickness"])
    assert [t.name for t in Terms.from_config(cfg).terms] == ["info", "info_inv"]
    assert [t.name for t in Terms.from_config(get_recipe("infogan-mnist")).terms] == ["info"]
    torch.manual_seed(0)
    G, D = build_models(cfg)
    Q = build_q(cfg, D)
    spec = LatentSpec.from_config(cfg)
    latent = spec.sample(6, torch.Generator().manual_seed(1), "cpu")
    fake = apply_generator(G, latent)
    run = SimpleNamespace(D=D, Q=Q, net={"D": D}.__getitem__, augment=(), invariance=("rotation", "thickness"),
                          axes=())
    state = torch.get_rng_state()
    loss = invariance_loss(run, fake, latent, 10)
    torch.set_rng_state(state)  # the same transforms, by hand: the first half, read by Q through D's trunk
    logits = Q(D(transform(fake[:3].detach(), run.invariance), with_features=True)[1])[0]
    expected = torch.nn.functional.cross_entropy(logits, latent["codes"][:3, :10].argmax(1))
    assert math.isclose(float(loss.detach()), float(expected.detach()), rel_tol=1e-5)
    loss.backward()
    for net in (G, D.trunk, Q):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad is None for p in D.head.parameters())


def test_axes_are_checked_against_the_codes_and_the_transforms():
    assert parse_axes("slant,width", 2, ("rotation", "thickness")) == ("slant", "width")
    assert parse_axes("width", 2, ("rotation",)) == ("width",) and parse_axes("", 0, ()) == ()
    base = get_recipe("infogan-mnist")
    for extra, match in ((["info_invariance=rotation,thickness", "info_axes=slant,stroke"], "unknown stroke"),
                         (["info_invariance=rotation,thickness", "info_axes=slant,slant"], "named once"),
                         (["info_invariance=rotation,thickness", "info_axes=slant,width", "info_continuous=1"],
                          "2 axes for 1 continuous codes"),
                         (["info_invariance=rotation", "info_axes=slant,width"], "through thickness: add it"),
                         (["info_axes=slant"], "through thickness: add it to info_invariance")):
        with pytest.raises(ConfigError, match=match):
            apply_overrides(base, extra)


def test_each_image_goes_through_one_transform_that_keeps_its_axis():
    torch.manual_seed(0)
    x = _bar(100, width=4)
    out = transform_each(x, ("rotation", "thickness"))
    turned, thick = out[0::2], out[1::2]
    base = float(stroke_width(_u8(x[:1]))[0])
    turned_by, widened_by = abs(slant(_u8(turned))), abs(stroke_width(_u8(turned)) - base)
    thickened_by, slanted_by = abs(stroke_width(_u8(thick)) - base), abs(slant(_u8(thick)))
    # rotated, with the width kept up to resampling; thickened or thinned, with the slant kept
    assert np.median(turned_by) > 5 and np.median(widened_by) < 0.5
    assert np.median(thickened_by) > 1 and slanted_by.max() < 1e-3
    assert widened_by.max() < np.median(thickened_by)


@pytest.mark.parametrize("learned_std", [False, True])
def test_axes_add_each_codes_reading_from_the_images_that_keep_its_axis(learned_std):
    cfg = apply_overrides(get_recipe("infogan-mnist"), ["info_invariance=rotation,thickness", "info_axes=slant,width",
                                                         f"info_learned_std={learned_std}"])
    torch.manual_seed(0)
    G, D = build_models(cfg)
    Q = build_q(cfg, D)
    latent = LatentSpec.from_config(cfg).sample(8, torch.Generator().manual_seed(1), "cpu")
    fake = apply_generator(G, latent)
    run = SimpleNamespace(D=D, Q=Q, net={"D": D}.__getitem__, augment=(), invariance=("rotation", "thickness"),
                          axes=("slant", "width"))
    state = torch.get_rng_state()
    loss = invariance_loss(run, fake, latent, 10)
    torch.set_rng_state(state)  # by hand: the first half, rotated (0, 2) or thickened (1, 3), read by Q
    logits, mean, log_std = Q(D(transform_each(fake[:4].detach(), run.invariance), with_features=True)[1])
    codes = latent["codes"][:4]
    std = torch.ones(4, 2) if log_std is None else log_std.exp()
    nll = -torch.distributions.Normal(mean, std).log_prob(codes[:, 10:])
    # the slant code (10) from the thickened images, the width code (11) from the rotated ones
    expected = (torch.nn.functional.cross_entropy(logits, codes[:, :10].argmax(1)) + nll[1::2, 0].mean()
                + nll[0::2, 1].mean())
    assert math.isclose(float(loss.detach()), float(expected.detach()), rel_tol=1e-5)
    loss.backward()
    for net in (G, D.trunk, Q):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad is None for p in D.head.parameters())


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    layer = nn.Linear(20, 30)
    with torch.no_grad():
        layer.weight.mul_(10)
    module = spectral_norm_all(nn.Sequential(layer))
    for _ in range(30):  # power iterations, one per training-mode forward pass
        module(torch.randn(2, 20))
    module.eval()
    sigma = torch.linalg.matrix_norm(module[0].weight.detach(), ord=2)
    assert abs(float(sigma) - 1) < 1e-3
    cfg = apply_overrides(get_recipe("default"), ["spectral_norm=true"])
    _, D = build_models(cfg)
    assert all(hasattr(m, "parametrizations") for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_diffaugment_transforms_keep_shapes_and_gradients():
    torch.manual_seed(0)
    ones = torch.ones(6, 3, 16, 16)
    cut = diff_augment(ones, ("cutout",))
    holes = (cut[:, 0] == 0).flatten(1).sum(1)
    assert torch.equal(cut[:, 0], cut[:, 2])  # one hole through every channel
    assert int(holes.max()) == 8 * 8 and int(holes.min()) >= 4 * 4  # half the side, clipped at the border
    dot = torch.zeros(1, 1, 16, 16)
    dot[0, 0, 8, 8] = 1
    moved = diff_augment(dot.expand(20, 1, 16, 16).clone(), ("translation",))
    where = moved.flatten(1).argmax(1)
    rows, cols = where // 16, where % 16
    assert float(moved.sum()) == 20  # the pixel moves, and is never lost or doubled
    assert int((rows - 8).abs().max()) <= 2 and int((cols - 8).abs().max()) <= 2 and len(set(where.tolist())) > 1
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    out = diff_augment(x, parse_policy("color,translation,cutout"))
    assert out.shape == x.shape and not torch.equal(out, x)
    out.sum().backward()
    assert float(x.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="unknown flip; valid: color, translation, cutout"):
        apply_overrides(get_recipe("default"), ["diffaugment=color,flip"])


def test_conditional_fixed_grid_has_one_class_per_column_and_one_noise_per_row():
    spec = LatentSpec(5, num_classes=4)
    grid = spec.fixed(16, seed=3, columns=4)
    assert grid["labels"].view(4, 4).tolist() == [[0, 1, 2, 3]] * 4
    z = grid["z"].view(4, 4, 5)
    assert torch.equal(z[:, 0], z[:, 3]) and not torch.equal(z[0, 0], z[1, 0])
    assert torch.equal(LatentSpec(5).fixed(16, seed=3, columns=4)["z"],
                       torch.randn(16, 5, generator=torch.Generator().manual_seed(3)))  # unconditional: as before
