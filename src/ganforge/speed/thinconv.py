"""Convolutions with a single image channel on one side, through one matrix product and unfold/fold.

A GAN's discriminator usually opens with a convolution from the one grey channel, and its
generator ends with a transposed convolution back to it. oneDNN is slow at one half of each of
them on the CPU: the input gradient of a 1-channel convolution (the tf-dcgan discriminator's 1->64
5x5 stride-2 layer at batch 256: about 35 ms for 160 MFLOP at one thread, against 7 ms for its
weight gradient) and the forward pass of a 1-channel transposed convolution (the generator's 64->1
layer: 27 ms, against 6 ms for both its gradients). Written out, each slow half is one matrix product between the weight (C x k*k) and the
(N*H*W x C) activations, plus `unfold` (im2col) or `fold` (col2im) on the single-channel side,
which moves only N*H*W*k*k numbers. Each layer keeps oneDNN for its fast half.

Same mathematics, rounded differently; parameters, hooks and checkpoints are unchanged. A backward
pass that builds a graph (double backward, as gradient penalties need) differentiates PyTorch's own
convolution instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.speed.swap import graph_grads, swap_classes, torch_path


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C): free for an NHWC tensor, one copy otherwise."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n * h * w, c)


class _ThinConv(torch.autograd.Function):
    """Conv2d from one input channel: oneDNN forward and weight gradient; the input's gradient as one
    product and `fold`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight, bias)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        x, weight, bias = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        if torch.is_grad_enabled():  # create_graph: differentiate PyTorch's own convolution
            return graph_grads(ctx, gy, lambda x, w, b: F.conv2d(x, w, b, stride, padding), (x, weight, bias)) + (None, None)
        gx = gw = gb = None
        want_gb = bias is not None and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1] or want_gb:  # oneDNN is quick here
            _, gw, gb = torch.ops.aten.convolution_backward(
                gy, x, weight, None if bias is None else [bias.shape[0]], list(stride), list(padding), [1, 1],
                False, [0, 0], 1, [False, ctx.needs_input_grad[1], want_gb])
        if ctx.needs_input_grad[0]:
            n, _, h_out, w_out = gy.shape
            cols = (_rows(gy) @ weight.reshape(weight.shape[0], -1)).view(n, h_out * w_out, -1).transpose(1, 2)
            gx = F.fold(cols, x.shape[2:], weight.shape[2:], padding=padding, stride=stride)
        return gx, gw, gb, None, None


class _ThinConvTranspose(torch.autograd.Function):
    """ConvTranspose2d to one output channel: forward as one product and `fold`, oneDNN gradients."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding):
        ctx.save_for_backward(x, weight, bias)
        ctx.geometry = (stride, padding, output_padding)
        n, _, h, w = x.shape
        k = weight.shape[2:]
        out_size = tuple((size - 1) * s - 2 * p + kk + op
                         for size, s, p, kk, op in zip((h, w), stride, padding, k, output_padding))
        cols = (_rows(x) @ weight.reshape(weight.shape[0], -1)).view(n, h * w, -1).transpose(1, 2)
        y = F.fold(cols, out_size, k, padding=padding, stride=stride)
        return y if bias is None else y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, gy):
        x, weight, bias = ctx.saved_tensors
        stride, padding, output_padding = ctx.geometry
        if torch.is_grad_enabled():
            return graph_grads(ctx, gy, lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding),
                                (x, weight, bias)) + (None, None, None)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gy, x, weight, None if bias is None else [bias.shape[0]], list(stride), list(padding), [1, 1], True,
            list(output_padding), 1, mask)
        return gx, gw, gb, None, None, None


def _eligible(module: nn.Module) -> bool:
    """A plain, ungrouped, undilated, zero-padded Conv2d from one channel or ConvTranspose2d to one."""
    if type(module) is nn.Conv2d:
        thin = module.in_channels == 1
    elif type(module) is nn.ConvTranspose2d:
        thin = module.out_channels == 1
    else:
        return False
    return (thin and module.groups == 1 and module.dilation == (1, 1) and not isinstance(module.padding, str)
            and module.padding_mode == "zeros")


class _ThinMixin:
    """Marks a layer that takes the product path (for fp32 batches; PyTorch's own otherwise)."""


class ThinConv2d(_ThinMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch_path(self, x):
            return super().forward(x)
        return _ThinConv.apply(x, self.weight, self.bias, self.stride, self.padding)


class ThinConvTranspose2d(_ThinMixin, nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or torch_path(self, x):
            return super().forward(x, output_size)
        return _ThinConvTranspose.apply(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)


def thin_conv(*modules: nn.Module, enabled: bool) -> int:
    """Let every eligible single-channel convolution take the product path. Returns how many."""
    if not enabled:
        return 0
    return swap_classes(modules, lambda m: None if not _eligible(m) else
                        ThinConv2d if type(m) is nn.Conv2d else ThinConvTranspose2d)


def thin_used(*modules: nn.Module) -> bool:
    return any(isinstance(m, _ThinMixin) for model in modules for m in model.modules())
