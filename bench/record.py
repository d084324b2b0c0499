"""The record a benchmark ends with: the machine it ran on (torch, threads, cores, CPU, and what the
script adds, such as the load average), printed as one JSON line and saved beside the rows, so a
figure is never read without the conditions it was measured under."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def load_avg() -> list[float]:
    """The 1, 5 and 15-minute load averages: on a shared machine they say what else was running."""
    return [round(v, 2) for v in os.getloadavg()]


def write_record(out: Path | None, rows: list[dict], **extra) -> dict:
    """Print the machine line and, with `out`, write {"meta", "rows"} there as JSON; returns the meta."""
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), **extra}
    print(json.dumps(meta))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return meta


def time_sides(sides: dict[str, Callable], x: torch.Tensor, gy: torch.Tensor, grads_of: tuple,
               repeat: int) -> dict[str, float]:
    """Median wall ms of each side's forward pass alone (`fwd_<side>`) and with every gradient
    (`both_<side>`, the output's gradient being `gy`). One warm-up call of each first (oneDNN
    primitives, allocations), then `repeat` rounds that run the sides in turn, the order swapped
    every round, so a busy machine slows both alike. The modules in `grads_of` hold the weights whose
    gradients are cleared before each call."""

    def fwd(f):
        with torch.no_grad():
            f(x)

    def both(f):
        x.grad = None
        for module in grads_of:
            module.zero_grad(set_to_none=True)
        f(x).backward(gy)

    names = list(sides)
    for name in names:
        fwd(sides[name]), both(sides[name])
    times: dict[str, list[float]] = {f"{kind}_{name}": [] for kind in ("fwd", "both") for name in names}
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            for kind, call in (("fwd", fwd), ("both", both)):
                start = time.perf_counter()
                call(sides[name])
                times[f"{kind}_{name}"].append((time.perf_counter() - start) * 1e3)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}
