"""dft_conv: stride-1 convolutions through the DFT give PyTorch's own convolution's numbers, forward
and backward, for every shape, and a model takes the path only where it pays."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ganforge import speed as accel
from ganforge.speed.dftconv import DFTConv2d, DFTConvTranspose2d, _reference, dft_conv2d, pays, plan


def _shapes():
    """(h, w, kh, kw, padding, transposed) over square and oblong maps and kernels, every padding
    from none to more than 'same', for both convolution kinds."""
    for h, w, (kh, kw), pad, transposed in itertools.product(
            (1, 3, 7, 8), (5, 7), ((1, 1), (3, 3), (5, 5), (4, 3), (5, 2)), (0, 1, 2, 3), (False, True)):
        if transposed:
            if pad > min(kh, kw) - 1 or h - 1 - 2 * pad + kh < 1 or w - 1 - 2 * pad + kw < 1:
                continue
        elif h + 2 * pad < kh or w + 2 * pad < kw:
            continue
        yield h, w, kh, kw, pad, transposed


def test_dft_conv_is_the_convolution_in_float64():
    torch.manual_seed(0)
    cases = list(_shapes())
    assert len(cases) > 100
    for h, w, kh, kw, pad, transposed in cases:
        x = torch.randn(3, 4, h, w, dtype=torch.float64)
        weight = torch.randn(*((4, 5) if transposed else (5, 4)), kh, kw, dtype=torch.float64)
        bias = torch.randn(5, dtype=torch.float64)
        ref = (F.conv_transpose2d if transposed else F.conv2d)(x, weight, bias, padding=pad)
        out = _reference(x, weight, bias, plan(h, w, kh, kw, pad, pad, transposed), transposed)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-11, msg=str((h, w, kh, kw, pad, transposed)))


@pytest.mark.parametrize("transposed", [False, True])
def test_dft_conv_gradients_pass_gradcheck(transposed):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(*((3, 2) if transposed else (2, 3)), 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    p = plan(5, 4, 3, 3, 1, 1, transposed)
    fn = lambda *t: dft_conv2d(*t, p, transposed)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))  # gradient penalties differentiate twice


def test_the_tf_tutorial_layer_takes_the_dft_path_with_the_same_numbers():
    """G's 256->128 5x5 stride-1 transposed convolution at 7x7, in fp32: forward, input and weight
    gradients agree with PyTorch's to fp32 rounding."""
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False)
    layer = nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False)
    layer.load_state_dict(ref.state_dict())
    model = nn.Sequential(layer, nn.Conv2d(128, 8, 5, 2, 2))
    assert accel.dft_conv(model, enabled=True) == 1  # the strided conv is not eligible
    assert type(layer) is DFTConvTranspose2d and type(model[1]) is nn.Conv2d
    assert list(layer.state_dict()) == ["weight"]
    x = torch.randn(4, 256, 7, 7)
    x2 = x.clone().requires_grad_()
    x.requires_grad_()
    y_ref, y = ref(x), layer(x2)
    assert accel.dft_used(model)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    y_ref.backward(g)
    y.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)


def test_the_path_is_taken_only_where_it_pays():
    assert pays(plan(7, 7, 5, 5, 2, 2, True), 256, 128)  # the TF tutorial's G: 841 products vs about 190
    assert not pays(plan(1, 1, 4, 4, 0, 0, True), 100, 512)  # DCGAN's first layer: 16 products
    assert not pays(plan(14, 14, 3, 3, 1, 1, False), 128, 128)  # seed 001's 3x3 at 14x14
    assert not pays(plan(32, 32, 5, 5, 2, 2, True), 32, 3)  # seed 000's last layer: few channels
    assert not pays(plan(7, 7, 5, 5, 2, 2, True), 4, 4)


def test_other_inputs_run_pytorchs_convolution(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Conv2d(256, 128, 5, 1, 2)
    accel.dft_conv(layer, enabled=True)
    assert type(layer) is DFTConv2d
    x = torch.randn(2, 256, 7, 7, dtype=torch.float64)
    layer.double()
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=2))
    assert not layer.dft_used  # fp64 is not the fp32 path this was measured for
    layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x.float())
    assert not layer.dft_used  # autocast picks its own precision
    with monkeypatch.context() as patch:
        patch.setattr(torch.compiler, "is_compiling", lambda: True)
        layer(x.float())
    assert not layer.dft_used  # a compiled step keeps PyTorch's convolution
    layer(x.float())
    assert layer.dft_used


def test_swap_leaves_other_layers_and_disabled_runs_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, padding_mode="reflect"), nn.Conv2d(4, 4, 3, 1, "same"),
                        nn.ConvTranspose2d(4, 4, 3, 1, 1, output_padding=0), nn.Conv2d(4, 4, 3, 1, 1, dilation=2),
                        nn.Conv2d(4, 4, 3, 1, 1, groups=2), nn.Conv2d(4, 4, 3, 1, 1))
    assert accel.dft_conv(net, enabled=False) == 0
    assert accel.dft_conv(net, enabled=True) == 2
    assert [type(m).__name__ for m in net] == ["Conv2d", "Conv2d", "DFTConvTranspose2d", "Conv2d", "Conv2d",
                                               "DFTConv2d"]
