"""CPU execution: threads, the allocator, per-layer channels_last and faster dropout masks."""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import torch
from torch import nn


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int) -> int:
    """Intra-op CPU threads: `threads`, or every core this process may use (0). On a machine whose
    cores other processes keep busy, fewer threads can be much faster, since a parallel op waits
    for its slowest thread's time slice (docs/BENCHMARKS.md); `threads=N` sets it. Returns it."""
    n = max(1, int(threads or cores()))
    torch.set_num_threads(n)
    return n


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Keep freed heap memory in the process (glibc): a training step frees and reallocates the
    same large activations every time, and by default glibc hands them back to the kernel and
    page-faults them in again. This cut the page faults of a tf-dcgan step on the CPU by about
    two thirds and its system time from 8% to 3% of the wall time (docs/BENCHMARKS.md). The cost:
    the resident size stays at its peak. Returns whether the settings took."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 32 * 2**20),  # glibc's maximum: blocks below it come from the heap
        (_M_TRIM_THRESHOLD, 2**40),  # never trim the heap's top
        (_M_TOP_PAD, 64 * 2**20),  # grow the heap in large steps
    ))


class _Relayout(torch.autograd.Function):
    """x in the given memory format; its gradient goes back in x's own format. Elementwise ops whose
    operands disagree in format take a slow strided path on the CPU, so each layout boundary
    converts the gradient as well as the activation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, nhwc: bool) -> torch.Tensor:
        ctx.source = torch.channels_last if _is_nhwc(x) else torch.contiguous_format
        return x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.contiguous(memory_format=ctx.source), None


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _relayout_input(nhwc: bool):
    def hook(module: nn.Module, args: tuple):
        x = args[0]
        if x.ndim != 4 or _is_nhwc(x) == nhwc:
            return None
        return (_Relayout.apply(x, nhwc),) + tuple(args[1:])
    return hook


def channels_last(*modules: nn.Module, enabled: bool, device: torch.device | None = None) -> None:
    """NHWC conv weights (a no-op for linear layers and when disabled).

    On CUDA every conv goes NHWC (what tensor cores want). On the CPU oneDNN runs stride-1
    transposed convs much slower in NHWC (1.5x for the TF tutorial's 256->128 5x5 at 7x7) and the
    others faster, so those stay NCHW, and every layout boundary (into each conv, into Flatten)
    converts activation and gradient together; see docs/BENCHMARKS.md."""
    if not enabled:
        return
    if device is None or device.type != "cpu":
        for module in modules:
            module.to(memory_format=torch.channels_last)
        return
    for model in modules:
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nhwc = not (isinstance(module, nn.ConvTranspose2d) and module.stride == (1, 1))
                module.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
                module.register_forward_pre_hook(_relayout_input(nhwc))
            elif isinstance(module, nn.Flatten):
                module.register_forward_pre_hook(_relayout_input(False))


class FastDropout(nn.Dropout):
    """nn.Dropout whose mask is one uniform draw and a compare (`rand < 1-p`), which the CPU makes
    about 2.5x faster than `bernoulli_`: the same distribution, from another random stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * torch.rand_like(x).lt_(keep).div_(keep)


def fast_dropout(*modules: nn.Module, enabled: bool) -> None:
    """Swap every nn.Dropout for FastDropout (no parameters or buffers: checkpoints are unchanged)."""
    if not enabled:
        return
    for model in modules:
        for module in list(model.modules()):
            for name, child in module.named_children():
                if type(child) is nn.Dropout:
                    setattr(module, name, FastDropout(child.p, child.inplace))


def to_format(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.ndim == 4 else x
