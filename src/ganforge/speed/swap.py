"""What the layer-swapping speed features (`dftconv`, `thinconv`) share: the class swap that keeps a
module's parameters, buffers and hooks, the test for inputs that must take PyTorch's own kernel, and
the double backward through a differentiable version of the layer."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def swap_classes(modules: tuple[nn.Module, ...], choose: Callable[[nn.Module], type | None]) -> int:
    """Give every submodule the class `choose` names for it (None: keep its own). A subclass with
    another forward only: parameters, buffers, hooks and checkpoint keys stay. Returns how many."""
    count = 0
    for model in modules:
        for module in model.modules():
            cls = choose(module)
            if cls is not None:
                module.__class__ = cls
                count += 1
    return count


def torch_path(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether this call must run PyTorch's own layer: anything but a 4-D fp32 batch and fp32 weights,
    autocast, or a step being compiled (the compiler picks its own kernels)."""
    return (x.ndim != 4 or x.dtype != torch.float32 or module.weight.dtype != torch.float32
            or torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling())


def graph_grads(ctx, gy: torch.Tensor, fn: Callable, inputs: tuple) -> tuple:
    """A backward that builds a graph (double backward, as gradient penalties need): the gradients of
    (x, weight, bias) the node needs, through `fn`, a differentiable version of the layer."""
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
    with torch.enable_grad():
        y = fn(*inputs)
        got = torch.autograd.grad(y, [inputs[i] for i in wanted], gy, create_graph=True)
    grads = [None] * len(inputs)
    for i, g in zip(wanted, got):
        grads[i] = g
    return tuple(grads)
