"""The `speed` setting: presets and switches, resolved per device and model, and the pieces that
pick implementations (never mathematics): fused optimizers, bf16 autocast, cuDNN autotuning.

`speed` is a preset (`auto`, `eager`, `fast`) optionally followed by `+feature` / `+no_feature`,
e.g. `speed=fast+no_compile`. With `speed=eager` every speed object is a no-op, so the eager path
runs the same code as the fast one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch

from ganforge.errors import ConfigError

SPEEDS = ("auto", "eager", "fast")
# Switches `speed` can add (`+feature`) or remove (`+no_feature`) after a preset.
SPEED_FEATURES = ("fused", "channels_last", "bf16", "autotune", "async_guard", "compile", "cudagraphs",
                  "fast_dropout", "dft_conv", "upsample_conv", "thin_conv")

# What `fast` turns on, per device type. On the CPU only what measurably helped on 2 cores stays
# (docs/BENCHMARKS.md): convolutions dominate there, compile cost a minute and halved the step
# rate, and a host sync costs nothing, so the device-side guard would only add work.
FAST = {
    # CUDA's own dropout kernel is fused, and cuDNN's autotuning picks among FFT convolutions itself.
    # upsample_conv and thin_conv have been measured on the CPU only: on CUDA each is a `+feature` away.
    "cuda": frozenset(SPEED_FEATURES) - {"fast_dropout", "dft_conv", "upsample_conv", "thin_conv"},
    "cpu": frozenset({"fused", "channels_last", "fast_dropout", "dft_conv", "upsample_conv", "thin_conv"}),
}
# The models for which NHWC measured faster on the CPU (filled by register_cpu_channels_last).
_CPU_NHWC: set[str] = set()

# What `auto` means: fast on CUDA; on the CPU, the measured best.
AUTO = {"cuda": FAST["cuda"], "cpu": FAST["cpu"]}


def parse_speed(text: str) -> list[str]:
    """`speed` tokens: a preset (auto, eager, fast) and/or `feature` / `no_feature`, joined by +."""
    tokens = [t.strip() for t in str(text).split("+")]
    valid = SPEEDS + SPEED_FEATURES + tuple(f"no_{f}" for f in SPEED_FEATURES)
    if not all(t in valid for t in tokens):
        raise ConfigError(
            f"bad value speed={text!r}; valid: auto, eager or fast, optionally followed by +FEATURE or "
            f"+no_FEATURE with FEATURE one of {', '.join(SPEED_FEATURES)} (e.g. fast+no_compile)"
        )
    return tokens


@dataclass(frozen=True)
class Speed:
    """The speed features one run uses (all off = eager)."""

    fused: bool = False  # fused optimizer kernels (foreach where an optimizer has none)
    channels_last: bool = False  # NHWC weights and batches: what oneDNN and tensor cores prefer
    bf16: bool = False  # bf16 autocast for the forward passes
    autotune: bool = False  # CUDA: cudnn.benchmark and TF32 matmuls
    async_guard: bool = False  # the non-finite guard stays on the device: no host sync per step
    compile: bool = False  # torch.compile the whole D+G step
    cudagraphs: bool = False  # replay the whole D+G step as one CUDA graph
    fast_dropout: bool = False  # dropout masks from rand < 1-p instead of bernoulli_ (CPU)
    dft_conv: bool = False  # small stride-1 convolutions through the DFT where it pays (CPU)
    upsample_conv: bool = False  # nearest upsampling + conv run as one transposed conv (CPU)
    thin_conv: bool = False  # 1-channel convs' input gradient, 1-channel transposed convs' forward as a product (CPU)

    @property
    def name(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "eager"


def resolve_speed(speed: str, device: torch.device, model: str | None = None) -> Speed:
    """Turn the `speed` setting into features for a run of `model` on `device`: presets, then
    `+feature` / `+no_feature` in order."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    presets = {"auto": set(AUTO[kind]), "fast": set(FAST[kind]), "eager": set()}
    if kind == "cpu" and not _cpu_channels_last(model):
        for preset in presets.values():
            preset.discard("channels_last")
    on: set[str] = set()
    for token in parse_speed(speed):
        if token in presets:
            on = set(presets[token])
        elif token.startswith("no_"):
            on.discard(token[3:])
        else:
            on.add(token)
    return Speed(**{name: name in on for name in SPEED_FEATURES})



def _cpu_channels_last(model: str | None) -> bool:
    """Whether NHWC pays on the CPU for this model: a property registered with the model."""
    return model in _CPU_NHWC


def register_cpu_channels_last(model: str) -> None:
    """Say that per-layer NHWC pays on the CPU for `model`. A task's model registry calls this when
    such a model registers, so this shared room learns the property without importing any task."""
    _CPU_NHWC.add(model)


def set_backends(speed: Speed, device: torch.device) -> None:
    """Process-wide kernel choices (CUDA only): autotuned convolutions, TF32 matmuls."""
    if speed.autotune and device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # shapes are static, so the search pays once
        torch.set_float32_matmul_precision("high")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when enabled, else a null context. `cache_enabled=False` because a CUDA graph
    capture must not keep autocast's weight casts from outside it."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def optimizer_options(name: str, speed: Speed, device: torch.device) -> dict:
    """Keyword arguments that pick an optimizer's implementation (never its mathematics)."""
    opts: dict = {}
    if speed.fused:
        # Adam and SGD have fused kernels (CPU and CUDA); RMSprop has only the foreach one.
        opts = {"fused": True} if name in ("adam", "sgd") else {"foreach": True}
    if device.type == "cuda" and (speed.cudagraphs or speed.async_guard) and name != "sgd":
        # The step counter must live on the GPU: a captured or sync-free step cannot touch the host.
        opts["capturable"] = True
    return opts


def adopt_implementation(opt: torch.optim.Optimizer, options: dict) -> None:
    """After `load_state_dict` (which restores the saved run's implementation flags), put back this
    run's flags, and give each state tensor its parameter's device and memory layout. Values are
    copied exactly, so resuming stays bit-exact."""
    for group in opt.param_groups:
        for key in ("fused", "foreach", "capturable"):
            group[key] = options.get(key, None if key != "capturable" else False)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if key == "step":
                    state[key] = value.to(p.device if on_device else "cpu")
                elif value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)
