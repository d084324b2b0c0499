"""The model registry: a model's name is its config value, and its properties live with it.

Each entry says how to build the networks from a config, which task it serves, which image sizes
it can make, and the speed layer's per-model choices (whether NHWC pays on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ganforge.registry import Registry
from ganforge.speed.presets import register_cpu_channels_last


@dataclass(frozen=True)
class ModelInfo:
    name: str
    build: Callable  # config -> (G, D) for a GAN, or the network for a detector
    description: str
    kind: str = "gan"  # the task: "gan" or "detector"
    sizes: tuple[int, ...] | None = None  # image sizes it can make (None: any)
    # On 2 CPU cores (oneDNN), per-layer NHWC paid for the 3x3/4x4 conv nets and was neutral or
    # slower for nets built around 5x5 transposed convs and dense<->conv reshapes; with dft_conv
    # writing its output in NHWC, it paid for the TF tutorial's nets too (docs/BENCHMARKS.md).
    cpu_channels_last: bool = False


MODELS: Registry[ModelInfo] = Registry("model")


def register(name: str, description: str, **properties) -> Callable:
    """Decorator: register a builder under `name` with its properties."""
    def add(build: Callable) -> Callable:
        info = ModelInfo(name, build, description, **properties)
        MODELS.register(name, info)
        if info.cpu_channels_last:  # the speed layer's `auto` reads it there, knowing no task
            register_cpu_channels_last(name)
        return build
    return add


def gan_models() -> tuple[str, ...]:
    return tuple(name for name, info in MODELS.items() if info.kind == "gan")


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, non_trainable) the Keras way: parameters, and BN moving mean + variance."""
    trainable = sum(p.numel() for p in module.parameters())
    non_trainable = sum(b.numel() for name, b in module.named_buffers()
                        if name.endswith(("running_mean", "running_var")))
    return trainable, non_trainable
