"""Execution helpers that do nothing when switched off: device choice, threads, autocast.

The training loop calls these unconditionally; with `speed=eager` on the CPU every one of them is a
no-op, so the single-device eager path runs the same code as the fast path.
"""

from __future__ import annotations

import contextlib
import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return device


def resolve_speed(speed: str, device: torch.device) -> str:
    """`auto` is `fast` on CUDA and `eager` on the CPU."""
    if speed == "auto":
        return "fast" if device.type == "cuda" else "eager"
    return speed


def set_threads(threads: int) -> None:
    """`threads > 0` pins torch's intra-op threads; 0 keeps torch's default (one per physical core),
    or whatever the host program chose (the tests run one thread per worker)."""
    if threads > 0:
        torch.set_num_threads(threads)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled, else a null context."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
