"""CPU execution: threads, the allocator, per-layer channels_last and faster dropout masks."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import time

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
    from ganforge.speed.dftconv import DFTMixin

    for model in modules:
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nhwc = not (isinstance(module, nn.ConvTranspose2d) and module.stride == (1, 1))
                module.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
                module.register_forward_pre_hook(_relayout_input(nhwc))
                if isinstance(module, DFTMixin):  # the DFT path writes either layout at the same cost
                    module.nhwc_out = True
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


# ---- threads=0 on a shared machine -------------------------------------------------------------
# A parallel op waits for its slowest thread, and on a core other processes keep busy that thread
# gets a time slice only now and then: with two cores and one busy neighbour, two threads ran 3-6x
# slower than one (docs/BENCHMARKS.md). So threads=0 counts the cores other work leaves free.

GOVERNOR_ENV = "GANFORGE_THREAD_GOVERNOR"  # "off": threads=0 is every core, never re-chosen
_FREE_ENOUGH = 0.75  # a core counts as free when other work leaves at least this much of it
_RECHECK_SECONDS = 2.0  # the shortest measuring window (a log window can be one step long)


def cpu_ticks(stat_text: str) -> tuple[int, int, int]:
    """(busy ticks, all ticks, CPUs) of the machine from the text of /proc/stat."""
    busy = total = cpus = 0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if name == "cpu":
            values = [int(v) for v in fields[:8]]  # user .. steal; guest time is inside user
            total = sum(values)
            busy = total - values[3] - (values[4] if len(values) > 4 else 0)  # minus idle, iowait
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    return busy, total, max(cpus, 1)


def others_busy(before: tuple[int, int, int], after: tuple[int, int, int], own_seconds: float,
                tick_hz: float) -> float:
    """Cores' worth of CPU time other processes used between two /proc/stat readings, given this
    process's own CPU time (all its threads, and its child processes') over the same interval."""
    busy = after[0] - before[0] - own_seconds * tick_hz
    per_cpu = (after[1] - before[1]) / after[2]  # ticks of one CPU's time that passed
    return max(0.0, busy / per_cpu) if per_cpu > 0 else 0.0


def choose_threads(cores_here: int, busy_elsewhere: float) -> int:
    """Intra-op threads for `cores_here` cores of which other work keeps `busy_elsewhere` busy."""
    return max(1, min(cores_here, int(cores_here - busy_elsewhere + (1 - _FREE_ENOUGH))))


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its child processes, live (a DataLoader's workers, read
    from /proc) and ended: work the run does itself, which must not count as a neighbour's."""
    ended = os.times()
    seconds = time.process_time() + ended.children_user + ended.children_system
    me, tick = str(os.getpid()), float(os.sysconf("SC_CLK_TCK"))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):
            continue  # gone meanwhile, or not readable
        if len(fields) > 12 and fields[1] == me:  # fields[1]: the parent's pid
            seconds += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return seconds


def _read_proc() -> tuple[str, float]:
    with open("/proc/stat", encoding="ascii") as fh:
        return fh.read(), own_cpu_seconds()


class ThreadGovernor:
    """threads=0 on the CPU: intra-op threads for the cores other work leaves free, chosen at start
    and re-chosen at log windows (when two checks in a row agree), each change a `threads` event;
    and once per run, a warning when images/s stays under half of the run's best log window for
    two windows.
    Does nothing for threads=N, on CUDA, under torchrun (each rank has its share of the cores) or
    with GANFORGE_THREAD_GOVERNOR=off. A run whose threads changed is not bit-reproducible on
    another machine: the order of a parallel reduction depends on the thread count."""

    def __init__(self, threads: int, device: torch.device, mlog, log, step: int = 0, *,
                 read=_read_proc, clock=time.monotonic, settle: float = 0.25) -> None:
        self.mlog, self.log, self.read, self.clock = mlog, log, read, clock
        self.active = (threads == 0 and torch.device(device).type == "cpu" and os.environ.get(GOVERNOR_ENV) != "off"
                       and int(os.environ.get("WORLD_SIZE", "1")) == 1 and os.path.exists("/proc/stat"))
        self.best = 0.0
        self.windows = self.slow = 0
        self.warned = False
        self.pending: int | None = None
        self.cores = cores()
        self.threads = torch.get_num_threads()
        self.tick_hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        if not self.active:
            return
        self._sample()
        if settle > 0:
            time.sleep(settle)  # a first look at the neighbours before the first step
        self.check(step, None, start=True)

    def _sample(self) -> None:
        text, own = self.read()
        self.last, self.own, self.at = cpu_ticks(text), own, self.clock()

    def check(self, step: int, window, *, start: bool = False) -> None:
        """At a log window: re-choose the threads (at most every few seconds) and watch images/s."""
        if not self.active:
            return
        if window is not None and window.count:
            self._watch(step, window.images_per_second())
        if not start and self.clock() - self.at < _RECHECK_SECONDS:
            return
        before, own_before = self.last, self.own
        self._sample()
        busy = others_busy(before, self.last, self.own - own_before, self.tick_hz)
        wanted = choose_threads(self.cores, busy)
        if wanted == self.threads:
            self.pending = None
        elif start or self.pending == wanted:  # two checks in a row: not a passing burst
            torch.set_num_threads(wanted)
            self.mlog.event(step, "threads", threads=wanted, previous=self.threads, cores=self.cores,
                            busy_elsewhere=round(busy, 2))
            self.threads, self.pending = wanted, None
        else:
            self.pending = wanted

    def _watch(self, step: int, images_per_second: float) -> None:
        self.windows += 1
        if self.windows <= 1:  # the first window holds start-up costs (compile, caches)
            return
        self.slow = self.slow + 1 if images_per_second < 0.5 * self.best else 0
        self.best = max(self.best, images_per_second)
        if not self.warned and self.slow >= 2:  # two windows in a row: not one hiccup
            self.warned = True
            message = (f"training slowed to {images_per_second:.0f} images/s, under half of this run's "
                       f"best {self.best:.0f}: other work is probably using the cores; try threads=1, "
                       f"or fewer processes at once")
            self.mlog.warning(step, message, alarm="slow")
            self.log(f"warning: {message}")
