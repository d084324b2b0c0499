"""thin_conv: convolutions from one channel and transposed convolutions to one channel give PyTorch's
own numbers through their product-and-fold halves, forward and backward, for every geometry, and only
such layers take the path."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ganforge import speed as accel
from ganforge.speed.thinconv import ThinConv2d, ThinConvTranspose2d, _ThinConv, _ThinConvTranspose


def _geometries():
    """(h, w, k, stride, padding, output_padding): square and oblong maps and kernels, strides 1-3,
    paddings from none to k-1, every valid output padding."""
    for (h, w), k, s, p in itertools.product(((7, 7), (6, 9), (1, 2)), ((5, 5), (3, 3), (4, 2), (1, 1)),
                                             ((1, 1), (2, 2), (3, 2)), ((0, 0), (1, 1), (2, 1))):
        if p[0] > k[0] - 1 or p[1] > k[1] - 1:
            continue
        for op in {(0, 0), (s[0] - 1, s[1] - 1)}:
            yield (h, w), k, s, p, op


def test_thin_conv_is_the_convolution_in_float64():
    torch.manual_seed(0)
    checked = 0
    for (h, w), k, s, p, _ in _geometries():
        if h + 2 * p[0] < k[0] or w + 2 * p[1] < k[1]:
            continue
        x = torch.randn(2, 1, h, w, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(3, 1, *k, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
        ref = F.conv2d(x, weight, bias, s, p)
        out = _ThinConv.apply(x, weight, bias, s, p)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        gy = torch.randn_like(ref)
        want = torch.autograd.grad(ref, (x, weight, bias), gy)
        got = torch.autograd.grad(out, (x, weight, bias), gy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=str((h, w, k, s, p)))
        checked += 1
    assert checked > 60


def test_thin_conv_transpose_is_the_transposed_convolution_in_float64():
    torch.manual_seed(0)
    checked = 0
    for (h, w), k, s, p, op in _geometries():
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(3, 1, *k, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(1, dtype=torch.float64, requires_grad=True)
        try:
            ref = F.conv_transpose2d(x, weight, bias, s, p, op)
        except RuntimeError:
            continue  # a geometry PyTorch itself refuses (output padding vs stride)
        out = _ThinConvTranspose.apply(x, weight, bias, s, p, op)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12, msg=str((h, w, k, s, p, op)))
        gy = torch.randn_like(ref)
        want = torch.autograd.grad(ref, (x, weight, bias), gy)
        got = torch.autograd.grad(out, (x, weight, bias), gy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
        checked += 1
    assert checked > 80


def test_gradients_pass_gradcheck_and_gradgradcheck():
    """Gradient penalties differentiate twice: that goes through PyTorch's own convolution."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    conv = lambda *t: _ThinConv.apply(*t, (2, 2), (1, 1))  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, w, b)) and torch.autograd.gradgradcheck(conv, (x, w, b))
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    convt = lambda *t: _ThinConvTranspose.apply(*t, (2, 2), (1, 1), (1, 1))  # noqa: E731
    assert torch.autograd.gradcheck(convt, (x, w, b)) and torch.autograd.gradgradcheck(convt, (x, w, b))


@pytest.mark.parametrize("nhwc", [False, True])
def test_tf_tutorial_layers_take_the_path_with_the_same_numbers(nhwc):
    """D's 1->64 5x5 stride-2 convolution and G's 64->1 transposed one at batch 16, in fp32, both
    memory layouts: forward and every gradient within fp32 rounding of PyTorch's."""
    torch.manual_seed(0)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    for layer, shape in ((nn.Conv2d(1, 64, 5, 2, 2), (16, 1, 28, 28)),
                         (nn.ConvTranspose2d(64, 1, 5, 2, 2, output_padding=1, bias=False), (16, 64, 14, 14))):
        layer = layer.to(memory_format=fmt)
        fast = copy.deepcopy(layer)
        assert accel.thin_conv(fast, enabled=True) == 1
        assert isinstance(fast, (ThinConv2d, ThinConvTranspose2d))
        x = torch.randn(*shape).contiguous(memory_format=fmt).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y2 = layer(x), fast(x2)
        torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)
        gy = torch.randn_like(y)
        y.backward(gy), y2.backward(gy)
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
        for p, p2 in zip(layer.parameters(), fast.parameters()):
            torch.testing.assert_close(p2.grad, p.grad, rtol=1e-4, atol=1e-4)


def test_only_single_channel_layers_are_swapped_and_checkpoints_stay():
    net = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.ConvTranspose2d(8, 1, 4, 2, 1),
                        nn.ConvTranspose2d(1, 2, 3), nn.Conv2d(1, 2, 3, dilation=2), nn.Conv2d(1, 2, 3, padding="same"),
                        nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Conv2d(3, 1, 3))
    keys = net.state_dict().keys()
    assert accel.thin_conv(net, enabled=False) == 0
    assert accel.thin_conv(net, enabled=True) == 2
    assert [type(m) for m in net] == [ThinConv2d, nn.Conv2d, ThinConvTranspose2d, nn.ConvTranspose2d, nn.Conv2d,
                                      nn.Conv2d, nn.Conv2d, nn.Conv2d]
    assert net.state_dict().keys() == keys and accel.thin_used(net)


def test_other_dtypes_autocast_and_explicit_output_size_keep_pytorchs_convolution(monkeypatch):
    calls = []
    monkeypatch.setattr(_ThinConv, "apply", lambda *a: calls.append("conv"))
    monkeypatch.setattr(_ThinConvTranspose, "apply", lambda *a: calls.append("convt"))
    conv, convt = nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 1, 3, 2)
    accel.thin_conv(conv, convt, enabled=True)
    conv.double()(torch.randn(1, 1, 5, 5, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv.float()(torch.randn(1, 1, 5, 5))
    convt(torch.randn(1, 2, 3, 3), output_size=[8, 8])
    assert calls == []
    conv(torch.randn(1, 1, 5, 5)), convt(torch.randn(1, 2, 3, 3))
    assert calls == ["conv", "convt"]


@pytest.mark.parametrize("wants", ["input", "weight", "bias", "all"])
@pytest.mark.parametrize("bias", [True, False])
def test_each_gradient_alone_through_the_modules(wants, bias):
    """What the steps ask for: the generator's step wants only the input's gradient of D's first
    layer (its weights frozen), D's step on real images only the weights'. In float64 the module
    runs PyTorch's path, so these call the functions the fp32 modules call, with the same masks."""
    torch.manual_seed(0)
    for transposed in (False, True):
        c_in, c_out = (3, 1) if transposed else (1, 3)
        x = torch.randn(2, c_in, 6, 5, dtype=torch.float64, requires_grad=wants in ("input", "all"))
        w = torch.randn(*((c_in, c_out) if transposed else (c_out, c_in)), 3, 4, dtype=torch.float64,
                        requires_grad=wants in ("weight", "all"))
        b = torch.randn(c_out, dtype=torch.float64, requires_grad=wants in ("bias", "all")) if bias else None
        if not any(t is not None and t.requires_grad for t in (x, w, b)):
            continue
        if transposed:
            out = _ThinConvTranspose.apply(x, w, b, (2, 1), (1, 3), (1, 0))  # oblong stride, padding up to k-1
            ref = F.conv_transpose2d(x, w, b, (2, 1), (1, 3), (1, 0))
        else:
            out = _ThinConv.apply(x, w, b, (2, 1), (1, 3))
            ref = F.conv2d(x, w, b, (2, 1), (1, 3))
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        wrt = [t for t in (x, w, b) if t is not None and t.requires_grad]
        gy = torch.randn_like(ref)
        for a, e in zip(torch.autograd.grad(out, wrt, gy), torch.autograd.grad(ref, wrt, gy)):
            torch.testing.assert_close(a, e, rtol=0, atol=1e-11)
