"""Execution helpers that do nothing when switched off: device, threads, speed features, autocast,
compile and CUDA-graph capture of the whole step with a fallback to eager, the sync-free guard.

The training loop calls these unconditionally. With `speed=eager` every one of them is a no-op, so
the eager path runs the same code as the fast one. `speed` is a preset (`auto`, `eager`, `fast`)
optionally followed by `+feature` / `+no_feature` switches, e.g. `speed=fast+no_compile`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import time
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .config import SPEED_FEATURES, parse_speed
from .errors import ConfigError

# What `fast` turns on, per device type. On the CPU only what measurably helped on 2 cores stays
# (docs/BENCHMARKS.md): convolutions dominate there, compile cost a minute and halved the step
# rate, and a host sync costs nothing, so the device-side guard would only add work.
FAST = {
    "cuda": frozenset(SPEED_FEATURES) - {"fast_dropout"},  # CUDA's own dropout kernel is fused
    "cpu": frozenset({"fused", "channels_last", "fast_dropout"}),
}
# What `auto` means: fast on CUDA; on the CPU, the measured best.
AUTO = {"cuda": FAST["cuda"], "cpu": FAST["cpu"]}
# On the CPU (oneDNN, 2 cores), per-layer NHWC with layout-converting boundaries (see
# `channels_last`) paid for the 3x3/4x4 conv nets (upconv, default, dcgan); on the two Keras nets
# built around 5x5 transposed convs and dense<->conv reshapes it was neutral (tf-dcgan) or cost 8%
# (cifar-dcgan), so there the presets leave it off; `+channels_last` still forces it.
CPU_CHANNELS_LAST = frozenset({"upconv", "default", "dcgan"})


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

    @property
    def name(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "eager"


def resolve_speed(speed: str, device: torch.device, model: str | None = None) -> Speed:
    """Turn the `speed` setting into features for a run of `model` on `device`: presets, then
    `+feature` / `+no_feature` in order."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    presets = {"auto": set(AUTO[kind]), "fast": set(FAST[kind]), "eager": set()}
    if kind == "cpu" and model not in CPU_CHANNELS_LAST:
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


def notice(message: str) -> None:
    """The one-line notice a speed feature prints when it falls back."""
    print(f"ganforge: {message}", file=sys.stderr, flush=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


# ---- the non-finite guard ------------------------------------------------------------------------

def all_finite(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """0-dim bool on the device: every loss and every gradient is finite."""
    flag = torch.stack([torch.isfinite(loss.detach()).all() for loss in losses]).all()
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flag = flag & torch.isfinite(torch.nn.utils.get_total_norm(grads))
    return flag


def _live_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Everything `opt.step()` may write: the parameters and every tensor of their state."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state = [v for p in params for v in opt.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
    return [p.detach() for p in params] + state


class StepGuard:
    """Takes optimizer steps only when their losses and gradients are finite; skips are counted by
    the loop.

    Host mode reads the flag and does not take a bad step (free on the CPU). Sync-free mode keeps the
    flag on the device: the step always runs, then every parameter and state tensor selects its
    pre-step copy where the flag is false, so a skipped step changes nothing and the host never
    waits. An optimizer's very first step (its state does not exist yet) is always host-checked.
    """

    def __init__(self, sync_free: bool) -> None:
        self.sync_free = sync_free
        self._copies: dict[int, list[torch.Tensor]] = {}  # per optimizer, reused every step

    def step(self, optimizers: list[torch.optim.Optimizer], losses: list[torch.Tensor],
             params: list[torch.Tensor]) -> bool | torch.Tensor:
        finite = all_finite(losses, params)
        first = any(not opt.state for opt in optimizers)
        if not self.sync_free or first:
            ok = bool(finite)
            for opt in optimizers:
                if ok:
                    opt.step()
                else:
                    opt.zero_grad(set_to_none=True)
            return ok
        with torch.no_grad():
            lives = [_live_tensors(opt) for opt in optimizers]
            for opt, live in zip(optimizers, lives):
                copies = self._copies.get(id(opt))
                if copies is None or [c.shape for c in copies] != [t.shape for t in live]:
                    self._copies[id(opt)] = [t.clone() for t in live]
                else:
                    torch._foreach_copy_(copies, live)
            for opt in optimizers:
                opt.step()
            for opt, live in zip(optimizers, lives):
                for t, old in zip(live, self._copies[id(opt)]):
                    t.copy_(torch.where(finite, t, old))
        return finite


# ---- whole-step compile and capture, with fallback ------------------------------------------------

Snapshot = Callable[[], Callable[[], None]]  # takes a copy of the live state; returns its restore


class CompiledStep:
    """`torch.compile` of the whole D+G step, or the step itself when off.

    If the first (compiling) call raises, the state it may have half-changed is restored, a
    one-line notice is printed, and training continues in eager mode. `compile_seconds` adds up
    the calls that compiled something (the first, and any recompile), step included.
    """

    def __init__(self, fn: Callable, enabled: bool, snapshot: Snapshot, **options) -> None:
        self.eager = fn
        self.snapshot = snapshot
        self.compiled = torch.compile(fn, dynamic=False, **options) if enabled else None
        self.ready = False
        self.failed: str | None = None
        self.compile_seconds: float | None = None

    def __call__(self, *args):
        if self.compiled is None:
            return self.eager(*args)
        first, graphs, start = not self.ready, _graphs_compiled(), time.perf_counter()
        if not first:
            out = self.compiled(*args)
        else:
            restore = self.snapshot()
            try:
                out = self.compiled(*args)
            except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
                restore()
                self.compiled, self.failed = None, _first_line(err)
                notice(f"torch.compile failed ({self.failed}); training continues in eager mode")
                return self.eager(*args)
            self.ready = True
        if first or _graphs_compiled() != graphs:
            self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - start
        return out


def _graphs_compiled() -> int:
    """How many graphs dynamo has compiled in this process (its own counter; 0 if unavailable)."""
    try:
        return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    except (AttributeError, KeyError, TypeError):
        return 0


class GraphedStep:
    """Replays the whole D+G step as one CUDA graph, or calls it when off.

    Inputs and outputs are pytrees of tensors. The first `warmup` calls run normally on a side
    stream (lazy optimizer state, cuDNN autotuning); the next one captures into static input
    buffers and replays; later calls copy their inputs in and replay. Outputs are cloned, because
    the next replay overwrites the graph's. If capture fails, the state is restored, a one-line
    notice printed, and the step runs uncaptured from then on.
    """

    graph_api = torch.cuda  # tests substitute a CPU stand-in with `CUDAGraph`, `graph`, `Stream`...
    warmup = 3

    def __init__(self, fn: Callable, enabled: bool, snapshot: Snapshot) -> None:
        self.fn = fn
        self.enabled = enabled
        self.snapshot = snapshot
        self.calls = 0
        self.graph = None
        self.static_in: list[torch.Tensor] = []
        self.spec = None  # the inputs' pytree structure
        self.static_out = None
        self.failed: str | None = None
        self.capture_seconds: float | None = None

    def __call__(self, *inputs):
        if not self.enabled:
            return self.fn(*inputs)
        api = self.graph_api
        if not api.is_available():
            self.enabled, self.failed = False, "no CUDA device"
            notice("CUDA graphs need a CUDA device; the step runs uncaptured")
            return self.fn(*inputs)
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = api.Stream()
            side.wait_stream(api.current_stream())
            with api.stream(side):
                out = self.fn(*inputs)
            api.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            restore = self.snapshot()
            start = time.perf_counter()
            try:
                leaves, self.spec = pytree.tree_flatten(inputs)
                self.static_in = [t.clone() for t in leaves]
                graph = api.CUDAGraph()
                with api.graph(graph):
                    self.static_out = self.fn(*pytree.tree_unflatten(self.static_in, self.spec))
            except Exception as err:  # noqa: BLE001 - any capture failure means: run uncaptured
                restore()
                self.enabled, self.failed = False, _first_line(err)
                self.static_in, self.static_out = [], None
                notice(f"CUDA graph capture failed ({self.failed}); the step runs uncaptured")
                return self.fn(*inputs)
            self.graph = graph
            self.capture_seconds = time.perf_counter() - start
        else:
            for static, new in zip(self.static_in, pytree.tree_leaves(inputs)):
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.static_out)

    def reset(self) -> None:
        """Forget the capture (after the state's tensors were replaced, e.g. by a rollback)."""
        self.graph, self.static_in, self.static_out, self.calls = None, [], None, 0
