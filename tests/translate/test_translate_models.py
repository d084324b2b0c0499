"""The translation networks: the papers' parameter counts, shapes, init, and the PatchGAN's patch."""

from __future__ import annotations

import pytest
import torch

from ganforge.translate.models import PATCH_LAYERS, PatchGAN, ResNetGenerator, UNet, count, init_weights


def test_pix2pix_parameter_counts():
    assert count(UNet(3, 3, num_downs=8, ngf=64, norm="batch")) == 54_413_955  # U-Net-256
    assert count(PatchGAN(6, 64, n_layers=3, norm="batch")) == 2_768_705  # 70 x 70 on the pair


def test_cyclegan_parameter_counts():
    g = count(ResNetGenerator(3, 3, blocks=9, ngf=64, norm="instance"))
    d = count(PatchGAN(3, 64, n_layers=3, norm="instance"))
    assert g == 11_378_179
    assert d == 2_764_737
    assert 2 * g + 2 * d == 28_285_832  # G_AB, G_BA, D_A, D_B


@pytest.mark.parametrize("channels", [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_generators_keep_the_size_and_change_the_channels(channels):
    c_in, c_out = channels
    x = torch.randn(2, c_in, 32, 64)  # not square
    for g in (UNet(c_in, c_out, num_downs=5, ngf=8), ResNetGenerator(c_in, c_out, blocks=2, ngf=8)):
        y = g(x)
        assert y.shape == (2, c_out, 32, 64)
        assert y.abs().max() <= 1
        y.mean().backward()


def test_unet_dropout_sits_in_the_three_innermost_decoder_blocks():
    net = UNet(3, 3, num_downs=8, ngf=8)
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)


def test_init_is_normal_0_002():
    torch.manual_seed(0)
    net = init_weights(UNet(3, 3, num_downs=8, ngf=64))
    w = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.mean())) < 1e-3
    assert float(w.std()) == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("patch", sorted(PATCH_LAYERS))
def test_patchgan_receptive_field_by_gradient_support(patch):
    """Which input pixels can change one output cell: a square of `patch` pixels."""
    torch.manual_seed(0)
    d = init_weights(PatchGAN(2, ndf=8, n_layers=PATCH_LAYERS[patch], norm="batch")).double().eval()
    x = torch.randn(1, 2, 128, 128, dtype=torch.float64, requires_grad=True)
    out = d(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    support = x.grad.abs().sum(dim=(0, 1)) != 0
    rows = support.any(dim=1).nonzero().flatten()
    cols = support.any(dim=0).nonzero().flatten()
    assert int(rows.max() - rows.min() + 1) == patch
    assert int(cols.max() - cols.min() + 1) == patch
    assert int(support.sum()) == patch * patch  # the whole square, nothing outside it
