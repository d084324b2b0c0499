"""Every recipe's networks: Keras-exact parameter counts, shapes, init and a forward/backward pass."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ganforge.gan.recipes import RECIPES, get_recipe
from ganforge.gan.models import MODELS, build_models, count_params
from ganforge.gan.models.layers import he_normal_

# (trainable, non_trainable) for G and D, from SEED-RECIPES.md (Keras model summaries).
SPEC = {
    "seed001-dcgan-mnist": ((856_193 - 384, 384), (390_657 - 896, 896)),
    "tf-dcgan-mnist": ((2_305_472, 25_472), (212_865, 0)),
    "dcgan": ((3_576_704, None), (2_765_568, None)),
}


@pytest.mark.parametrize("name", list(SPEC))
def test_parameter_counts_match_spec(name):
    g, d = build_models(get_recipe(name))
    (g_spec, d_spec) = SPEC[name]
    for net, (trainable, non_trainable) in ((g, g_spec), (d, d_spec)):
        got_t, got_n = count_params(net)
        assert got_t == trainable
        if non_trainable is not None:
            assert got_n == non_trainable


def test_seed000_counts_match_keras_summary():
    g, d = build_models(get_recipe("seed000-dcgan-cifar100"))
    assert sum(count_params(g)) == 1_086_787
    assert sum(count_params(d)) == 911_617
    trainable = count_params(g)[0] + count_params(d)[0]
    non_trainable = count_params(g)[1] + count_params(d)[1]
    assert (trainable + non_trainable, trainable, non_trainable) == (1_998_404, 1_964_932, 33_472)


def test_mlp_counts_follow_documented_layers():
    g, d = build_models(get_recipe("seed004-mlp-mnist"))
    assert count_params(g) == (100 * 128 + 128 + 128 * 784 + 784, 0)
    assert count_params(d) == (784 * 128 + 128 + 128 + 1, 0)
    wide, _ = build_models(replace(get_recipe("seed004-mlp-mnist"), g_hidden=256))
    assert count_params(wide)[0] == 100 * 256 + 256 + 256 * 784 + 784


def test_dcgan_32_variant_has_one_block_fewer():
    g, d = build_models(replace(get_recipe("dcgan"), image_size=32))
    assert g(torch.randn(2, 100)).shape == (2, 3, 32, 32)
    assert count_params(g)[0] < 3_576_704 and count_params(d)[0] < 2_765_568


@pytest.mark.parametrize("name", list(RECIPES))
def test_forward_backward_every_recipe(name):
    cfg = get_recipe(name)
    g, d = build_models(cfg)
    z = torch.randn(3, cfg.latent_dim)
    x = g(z)
    assert x.shape == (3, cfg.channels, cfg.image_size, cfg.image_size)
    logits = d(x)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def test_registry_covers_every_recipe_model():
    assert {r.config.model for r in RECIPES.values()} <= set(MODELS)


def test_keras_batchnorm_and_slopes():
    g, d = build_models(get_recipe("tf-dcgan-mnist"))
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    slopes = {m.negative_slope for m in list(g.modules()) + list(d.modules())
              if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.3}  # Keras LeakyReLU() default
    g1, d1 = build_models(get_recipe("seed001-dcgan-mnist"))
    assert {m.negative_slope for m in d1.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.2}


def test_keras_init_is_glorot_uniform_with_zero_bias():
    torch.manual_seed(0)
    g, _ = build_models(get_recipe("seed004-mlp-mnist"))
    layer = g.net[2]  # Dense 128 -> 784
    bound = (6 / (128 + 784)) ** 0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert torch.all(layer.bias == 0)


def test_dcgan_init_is_normal_002():
    torch.manual_seed(0)
    g, d = build_models(get_recipe("dcgan"))
    w = d.trunk[0].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    gammas = torch.cat([m.weight.detach() for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(gammas.mean()) - 1) < 0.01


def test_he_normal_is_truncated_with_keras_variance():
    torch.manual_seed(0)
    w = he_normal_(torch.empty(256, 128, 5, 5))
    fan_in = 128 * 25
    std = (2 / fan_in) ** 0.5
    assert abs(float(w.std()) / std - 1) < 0.02
    assert float(w.abs().max()) <= 2 * std / 0.87962566103423978 + 1e-9
