"""Will it fit? A run's memory, estimated before anything large is allocated.

An absurd setting (`batch_size=100000000`, `latent_dim=1e9`, a 4096-pixel MLP) would otherwise end in
an allocator traceback asking for hundreds of gigabytes, after a run folder was made. The estimate
builds the networks on PyTorch's `meta` device (shapes only, no memory), runs one forward pass there to
size the activations, and compares the total with what the device has free.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from ganforge.errors import ConfigError

HEADROOM = 0.9  # refuse what needs more than this share of the free memory


def available_bytes(device: torch.device) -> int | None:
    """Free memory of `device` (CUDA: free GPU memory; CPU: the kernel's MemAvailable), or None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(need: int, device: torch.device, what: str, advice: str) -> None:
    """One-line ConfigError when `need` bytes cannot fit in `device`'s free memory."""
    free = available_bytes(device)
    if free is not None and need > HEADROOM * free:
        raise ConfigError(f"{what} needs about {gib(need)} of memory but {device.type} has {gib(free)} free: {advice}")


def activation_bytes(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of every module output in one forward pass of `module` (built on the meta device) on
    meta `inputs`: what autograd keeps for the backward pass, roughly."""
    total = [0]

    def count(_module, _args, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def parameter_bytes(*modules: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def on_meta(build: Callable[[], tuple[nn.Module, ...]]) -> tuple[nn.Module, ...]:
    """Build networks on the meta device: their shapes, without their memory."""
    with torch.device("meta"):
        return build()
