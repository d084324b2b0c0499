"""Pieces of a training loop that do not depend on what is trained: exit codes and the errors
that carry them, SIGINT/SIGTERM at step boundaries, device-side log windows, the progress bar and
TensorBoard, and cadences."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ganforge.errors import GanforgeError

# Documented exit codes (README): 128 + signal number, as shells report them.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_DIVERGED = 3


class TrainingInterrupted(GanforgeError):
    """SIGINT/SIGTERM: a checkpoint was written at the step boundary; `--resume` continues."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDiverged(GanforgeError):
    exit_code = EXIT_DIVERGED


# ---- signals, windows, progress -----------------------------------------------------------------------

class SignalFlag:
    """First SIGINT/SIGTERM asks for a checkpoint at the next step boundary; a second exits at once
    (checkpoint writes are atomic, so nothing is corrupted)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "SignalFlag":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        except ValueError:  # not the main thread: signals stay with the host program
            self.previous = {}
        return self

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            sys.stderr.write("second signal: exiting now; resume from the last checkpoint\n")
            os._exit(128 + signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def exit_code(self) -> int:
        return EXIT_SIGINT if self.signum == signal.SIGINT else EXIT_SIGTERM

    def agree(self, timed_out: bool = False) -> bool:
        """Under torchrun, make a signal (or a time-out) that reached any rank every rank's, in one
        all-reduce, so that all stop at the same step boundary. Returns whether any rank timed out."""
        from ganforge import distributed as dist

        signum, timed = dist.agree_max(self.signum or 0, timed_out)
        if signum and self.signum is None:
            self.signum = signum
        return bool(timed)


def silent(*args, **kwargs) -> None:
    """The log of a process other than rank 0: rank 0 speaks for the run."""


class NoLog:
    """The metrics log of a process other than rank 0: it writes nothing."""

    def __enter__(self) -> "NoLog":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __getattr__(self, name: str):
        return silent


@dataclass
class Window:
    """Per-log-window sums of step statistics, kept on the device so the loop never syncs."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, stats: dict[str, torch.Tensor], images: int) -> None:
        for key, value in stats.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}

    def images_per_second(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The window for a checkpoint: a run stopped between two log steps resumes the same window,
        so its next log row holds the same numbers as an uninterrupted run's."""
        return ({f"window.{k}": v.detach().clone() for k, v in self.sums.items()},
                {"count": self.count, "images": self.images})

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], meta: dict | None, device: torch.device) -> "Window":
        window = cls()
        if meta:
            window.sums = {k[len("window."):]: v.to(device) for k, v in tensors.items() if k.startswith("window.")}
            window.count, window.images = int(meta["count"]), int(meta["images"])
        return window


class Progress:
    """The progress bar (on a terminal only) and the TensorBoard writer (when installed)."""

    def __init__(self, run_dir: Path, total: int, initial: int, quiet: bool, log: Callable = print,
                 write: bool = True) -> None:
        """`write=False` (a process other than rank 0): no TensorBoard files."""
        self.log, self.quiet = log, quiet
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        try:
            if not write:
                raise ImportError
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=initial or None)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, text: str, **postfix: str) -> None:
        """A log window's line: as the bar's postfix on a terminal, else printed."""
        if self.bar is not None:
            self.bar.set_postfix(**postfix, refresh=False)
        elif not self.quiet:
            self.log(text)

    def say(self, text: str) -> None:
        """A line that must not break the bar."""
        if self.quiet:
            return
        (self.bar.write if self.bar is not None else self.log)(text)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def due(step: int, every: int, unit_steps: int = 1) -> bool:
    """Whether a cadence of `every` units (of `unit_steps` steps each) falls on `step`; 0 = never."""
    return bool(every) and step % (every * unit_steps) == 0


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
