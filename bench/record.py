"""The record a benchmark ends with: the machine it ran on (torch, threads, cores, CPU, and what the
script adds, such as the load average), printed as one JSON line and saved beside the rows, so a
figure is never read without the conditions it was measured under."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

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
