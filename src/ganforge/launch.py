"""`--nproc N`: a training command started on N processes of this machine through torchrun's own
launcher, and the one line a person sees when that cannot run or a process dies.

The workers it starts run the same command without the launcher's flags; inside them
`ganforge.distributed` joins the group (they know they were started here by
`LAUNCHED_BY_GANFORGE`, so a lost peer is named once, by this launcher).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from ganforge.distributed import check_divides

LAUNCHED_BY_GANFORGE = "GANFORGE_LAUNCHER"  # set for the workers `launch` starts


def check_nproc(nproc: int, cuda: bool) -> None:
    """One line for a process count this machine cannot run: more than its cores (or GPUs)."""
    from ganforge.errors import ConfigError
    from ganforge.speed import cores

    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process")
    if cuda:
        have, what = torch.cuda.device_count(), "GPU(s)"
    else:
        have, what = cores(), "CPU core(s)"
    if nproc > have:
        raise ConfigError(f"--nproc {nproc} is more than the {have} {what} of this machine: use --nproc {have} "
                          "or fewer (one process per " + ("GPU" if cuda else "core") + "), or torchrun across "
                          "several machines")


def launch(argv: list[str], nproc: int, max_restarts: int = 0, cuda: bool = False,
           next_step: Callable[[], str] | None = None) -> int:
    """Run `python -m ganforge ARGV` on `nproc` processes of this machine through torchrun's own
    launcher (standalone rendezvous, as `torchrun --standalone --nproc-per-node N -m ganforge ARGV`
    does), in this process. Returns the exit code a person sees: the workers' own (their one line
    said what happened), 128 + signal when this launcher was stopped by one (the workers got it,
    stopped at the same step and saved), or 2 with one line naming a rank that died, followed by
    `next_step()` (what works now: it is asked after the failure, when the checkpoints are known)."""
    import logging
    import signal
    import sys

    check_nproc(nproc, cuda)
    from ganforge.speed import cores

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))
    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # torchrun's own notes: the launcher reports failures itself
    os.environ[LAUNCHED_BY_GANFORGE] = "1"
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}",
                                         f"--max-restarts={max_restarts}", "--module", "ganforge", *argv])
    try:
        run(args)
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        failures = err.failures
        killed = {r: f for r, f in failures.items() if f.exitcode < 0}
        if killed:
            # torchrun stops the survivors with SIGTERM: the rank that died of something else is the cause.
            at = min(killed, key=lambda r: (-killed[r].exitcode == signal.SIGTERM, killed[r].timestamp, r))
            try:
                how = f"killed by {signal.Signals(-killed[at].exitcode).name}"
            except ValueError:
                how = f"killed by signal {-killed[at].exitcode}"
        else:
            ours = {r: f for r, f in failures.items() if f.exitcode in (2, 3, 130, 143)}
            if len(ours) == len(failures):  # every failed worker said what happened in its own line
                return failures[min(failures)].exitcode
            at = min(r for r in failures if r not in ours)
            how = f"exited with code {failures[at].exitcode}"
        hint = next_step() if next_step is not None else ""
        print(f"ganforge: error: rank {at} (pid {failures[at].pid}) {how}; the other processes stopped"
              f"{'; ' + hint if hint else ''}", file=sys.stderr)
        return 2
    return 0


LAUNCH_FLAGS = ("--nproc", "--max-restarts")  # the launcher's own options, not passed to the workers


def strip_launch_flags(argv: list[str]) -> list[str]:
    """`argv` without `--nproc N` and `--max-restarts K` (in either spelling): the workers' command."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in LAUNCH_FLAGS:
            skip = True
            continue
        if item.startswith(tuple(f"{flag}=" for flag in LAUNCH_FLAGS)):
            continue
        out.append(item)
    return out


def launch_command(argv: list[str], nproc: int, max_restarts: int, *, device: str | None,
                   batch_size: int | None, next_step: Callable[[], str] | None = None) -> int:
    """A training command given `--nproc N` (`ganforge train` or `ganforge detect train`): refuse
    in one line what cannot run (a negative restart count, more processes than cores or GPUs for
    `device`, a global `batch_size` that does not split over N, when known before launching), then
    run the same command without the launcher's flags on N processes (:func:`launch`)."""
    from ganforge.device import resolve_device
    from ganforge.errors import ConfigError

    if max_restarts < 0:
        raise ConfigError(f"--max-restarts {max_restarts}: give 0 or more")
    cuda = resolve_device(device or "auto").type == "cuda"
    check_nproc(nproc, cuda)
    if batch_size is not None:
        check_divides(batch_size, "the global batch_size", f"choose a batch_size that is a multiple of {nproc}, "
                      "or another --nproc", world=nproc)
    return launch(strip_launch_flags(argv), nproc, max_restarts, cuda, next_step=next_step)
