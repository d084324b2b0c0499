"""Whole-step `torch.compile` and CUDA-graph capture, each falling back to eager with one line.

Task-neutral: the step is any function of a pytree of device tensors; `snapshot` takes a copy of the
state the step changes and returns the function that restores it, because a compile or a capture
that fails may have run part of a step.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch
from torch.utils import _pytree as pytree

from ganforge.io import first_line


def notice(message: str) -> None:
    """The one-line notice a speed feature prints when it falls back."""
    print(f"ganforge: {message}", file=sys.stderr, flush=True)


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
                self.compiled, self.failed = None, first_line(err, with_type=True)
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
                self.enabled, self.failed = False, first_line(err, with_type=True)
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
