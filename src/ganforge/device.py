"""Which device a command runs on, checked the same way for `train`, `sample`, `eval` and `detect`."""

from __future__ import annotations

import torch

from ganforge.errors import ConfigError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present. Anything but cpu/cuda (a typo, `mps`, `meta`), or a GPU that
    is not there, is a one-line error."""
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"bad device {name!r}: use {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported (ganforge runs on the CPU or CUDA GPUs): use "
                          f"{DEVICE_HELP}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} was asked for but no CUDA GPU is visible: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name} does not exist: this machine has {torch.cuda.device_count()} "
                              f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
