"""Execution helpers that do nothing when switched off: device, threads, speed features, autocast,
compile and CUDA-graph capture of the whole step with a fallback to eager, the sync-free guard.

The training loop calls these unconditionally. With `speed=eager` every one of them is a no-op, so
the eager path runs the same code as the fast one. `speed` is a preset (`auto`, `eager`, `fast`)
optionally followed by `+feature` / `+no_feature` switches, e.g. `speed=fast+no_compile`.
"""

from __future__ import annotations

import contextlib
import os
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
# (docs/BENCHMARKS.md): convolutions dominate there, compile costs minutes and bought nothing, and
# a host sync costs nothing, so the device-side guard would only add work.
FAST = {
    "cuda": frozenset(SPEED_FEATURES),
    "cpu": frozenset({"fused", "channels_last"}),
}
# What `auto` means: fast on CUDA; on the CPU, the measured best.
AUTO = {"cuda": FAST["cuda"], "cpu": FAST["cpu"]}


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

    @property
    def name(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "eager"


def resolve_speed(speed: str, device: torch.device) -> Speed:
    """Turn the `speed` setting into features: presets, then `+feature` / `+no_feature` in order."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    presets = {"auto": AUTO[kind], "fast": FAST[kind], "eager": frozenset()}
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


def idle_cores(seconds: float = 0.1) -> float | None:
    """How many cores the rest of the machine leaves idle right now (Linux /proc/stat; None elsewhere)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def set_threads(threads: int) -> int:
    """Intra-op CPU threads: `threads`, or for 0 one per core that the rest of the machine leaves
    idle (at least one). A parallel op finishes when its slowest thread does: on cores other
    processes keep busy, each extra thread waits for a time slice, and on a loaded 2-core machine
    two threads ran 1.6-4x slower than one (docs/BENCHMARKS.md). On an idle machine: every core.
    Returns the number set."""
    n = threads
    if not n:
        idle = idle_cores()
        n = cores() if idle is None else min(cores(), round(idle))
    n = max(1, int(n))
    torch.set_num_threads(n)
    return n


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


def channels_last(*modules: nn.Module, enabled: bool) -> None:
    """NHWC conv weights (a no-op for linear layers and when disabled)."""
    if enabled:
        for module in modules:
            module.to(memory_format=torch.channels_last)


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
            if ok:
                for opt in optimizers:
                    opt.step()
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
    one-line notice is printed, and training continues in eager mode. `first_call_seconds` is the
    compile time plus one step.
    """

    def __init__(self, fn: Callable, enabled: bool, snapshot: Snapshot, **options) -> None:
        self.eager = fn
        self.snapshot = snapshot
        self.compiled = torch.compile(fn, dynamic=False, **options) if enabled else None
        self.ready = False
        self.failed: str | None = None
        self.first_call_seconds: float | None = None

    def __call__(self, *args):
        if self.compiled is None:
            return self.eager(*args)
        if self.ready:
            return self.compiled(*args)
        restore = self.snapshot()
        start = time.perf_counter()
        try:
            out = self.compiled(*args)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            restore()
            self.compiled, self.failed = None, _first_line(err)
            notice(f"torch.compile failed ({self.failed}); training continues in eager mode")
            return self.eager(*args)
        self.ready = True
        self.first_call_seconds = time.perf_counter() - start
        return out


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
                self.static_in = [t.clone() for t in pytree.tree_leaves(inputs)]
                graph = api.CUDAGraph()
                with api.graph(graph):
                    self.static_out = self.fn(*pytree.tree_unflatten(self.static_in, pytree.tree_structure(inputs)))
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
