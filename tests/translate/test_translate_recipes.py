"""Translation recipes, the image pool and the linear decay."""

from __future__ import annotations

import pytest
import torch

from ganforge.config import apply_overrides
from ganforge.errors import ConfigError
from ganforge.translate.config import TranslateConfig, linear_decay
from ganforge.translate.models import build_nets, count
from ganforge.translate.pool import ImagePool
from ganforge.translate.recipes import RECIPES, get_recipe


def test_paper_recipes_build_the_papers_nets():
    nets = build_nets(get_recipe("pix2pix"))
    assert {k: count(v) for k, v in nets.items()} == {"G": 54_413_955, "D": 2_768_705}
    nets = build_nets(get_recipe("cyclegan"))
    assert {k: count(v) for k, v in nets.items()} == {"G_AB": 11_378_179, "G_BA": 11_378_179,
                                                        "D_A": 2_764_737, "D_B": 2_764_737}
    assert sum(count(v) for v in nets.values()) == 28_285_832
    at128 = build_nets(apply_overrides(get_recipe("cyclegan"), ["image_size=128", "load_size=143"]))
    blocks = [m for m in at128["G_AB"].modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 6  # ResNet-6 at 128 px


def test_paper_recipes_hold_the_papers_settings():
    p = get_recipe("pix2pix")
    assert (p.loss, p.lambda_l1, p.lr, p.beta1, p.batch_size, p.epochs, p.decay_from) == ("vanilla", 100, 2e-4, .5, 1, 200, .5)
    assert (p.load_size, p.image_size, p.flip, p.patch, p.dropout) == (286, 256, True, 70, 0.5)
    c = get_recipe("cyclegan")
    assert (c.loss, c.pool_size, c.lambda_cyc, c.lambda_idt, c.epochs, c.decay_from) == ("lsgan", 50, 10, .5, 200, .5)
    assert get_recipe("pix2pix-tf").steps == 40_000 and get_recipe("pix2pix-tf").decay_from == 1.0
    tf = get_recipe("cyclegan-tf")
    assert (tf.model, tf.g_norm, tf.epochs, tf.pool_size) == ("unet", "instance", 10, 0)


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_builds_and_runs_a_step_at_toy_size(name):
    cfg = apply_overrides(get_recipe(name), {"ngf": 4, "ndf": 4, "image_size": 32, "load_size": 32,
                                             "unet_downs": 5})
    nets = build_nets(cfg)
    for key, net in nets.items():
        if key.startswith("G"):
            c_in = net.model[1].in_channels if cfg.model == "resnet" else cfg.source_channels()
            out = net(torch.randn(1, c_in, 32, 32))
            assert out.shape[-2:] == (32, 32)


def test_linear_decay_values():
    # 100 constant + 100 decaying (per step here: 200 steps)
    assert [linear_decay(s, 200, 0.5) for s in (0, 50, 99, 100)] == [1.0, 1.0, 1.0, 1.0]
    assert linear_decay(150, 200, 0.5) == pytest.approx(0.5)
    assert linear_decay(199, 200, 0.5) == pytest.approx(0.01)
    assert linear_decay(200, 200, 0.5) == 0.0
    assert all(linear_decay(s, 40, 1.0) == 1.0 for s in range(40))  # constant
    values = [linear_decay(s, 200, 0.5) for s in range(200)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_config_refuses_bad_combinations():
    with pytest.raises(ConfigError, match="multiple of"):
        apply_overrides(get_recipe("pix2pix"), ["image_size=200", "load_size=220"])
    with pytest.raises(ConfigError, match="crop"):
        apply_overrides(get_recipe("pix2pix"), ["load_size=100"])
    with pytest.raises(ConfigError, match="identity"):
        apply_overrides(get_recipe("cyclegan"), ["channels_a=1"])
    with pytest.raises(ConfigError, match="valid: 1, 16, 34, 70"):
        apply_overrides(get_recipe("pix2pix"), ["patch=50"])
    assert TranslateConfig.from_dict(get_recipe("cyclegan").to_dict()) == get_recipe("cyclegan")


def test_image_pool_fills_then_returns_a_stored_image_half_the_time():
    pool = ImagePool(3)
    gen = torch.Generator().manual_seed(0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: each fake comes back itself
    stored_back = 0
    for i in range(1000):
        fake = torch.full((1, 1, 1, 1), 10.0 + i)
        before = [t.clone() for t in pool.images]
        out = pool.query(fake, gen)
        if out.item() != fake.item():
            stored_back += 1
            assert any(torch.equal(out[0], t) for t in before)  # an older fake
            assert any(torch.equal(fake[0], t) for t in pool.images)  # the new one took its place
        else:
            assert all(torch.equal(a, b) for a, b in zip(before, pool.images))
    assert 430 < stored_back < 570  # p = 1/2


def test_image_pool_of_zero_passes_fakes_through_and_state_round_trips():
    assert torch.equal(ImagePool(0).query(torch.ones(2, 1, 2, 2), torch.Generator()), torch.ones(2, 1, 2, 2))
    pool = ImagePool(4)
    pool.query(torch.randn(3, 1, 2, 2), torch.Generator())
    tensors, meta = pool.state("A")
    again = ImagePool(4)
    again.load("A", tensors, meta, torch.device("cpu"))
    assert len(again.images) == 3 and all(torch.equal(a, b) for a, b in zip(pool.images, again.images))
