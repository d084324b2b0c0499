"""Agreement: every rank reaches the same decision at the same point. A stop flag or a signal
(:func:`agree_max`), a step's non-finite guard (:func:`all_true`), a log window's means
(:func:`mean_across`), gradients computed outside DDP (:func:`average_grads`), and the outcome of a
step that may fail on bad input (:func:`main_decides`, :func:`main_first`, :func:`agree_outcome`), so
that all ranks stop with one line. In one process each is the plain value or call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist

from ganforge.distributed.group import (ElsewhereError, T, _collective, _comm_device, active, is_main, rank,
                                        world_size)
from ganforge.distributed.transport import broadcast_json, gather_json
from ganforge.errors import GanforgeError


def agree_max(*values: int) -> tuple[int, ...]:
    """The largest of each value over the ranks (stop flags, a signal number: any rank's counts),
    in one all-reduce."""
    if not active():
        return tuple(int(v) for v in values)
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=_comm_device())
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return tuple(int(v) for v in t.tolist())


def all_true(flag: bool | torch.Tensor) -> bool | torch.Tensor:
    """Whether `flag` holds on every rank; a device tensor stays one (no host sync)."""
    if not active():
        return flag
    if isinstance(flag, torch.Tensor):  # stays on its device: nccl on CUDA, no host sync
        t = flag.to(torch.int32).reshape(1)
        _collective(dist.all_reduce, t, op=dist.ReduceOp.MIN)
        return t.reshape(()).bool()
    t = torch.tensor([int(bool(flag))], dtype=torch.int32, device=_comm_device())
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_across(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over the ranks of each (scalar) tensor: one all-reduce for all of them."""
    if not active() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(_comm_device())
    _collective(dist.all_reduce, stacked)
    stacked = (stacked / world_size()).to(values[keys[0]].device)
    return {k: stacked[i] for i, k in enumerate(keys)}


def average_grads(params) -> None:
    """Average the gradients of `params` over the ranks (a phase that runs outside DDP's wrapper)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_comm_device())
    _collective(dist.all_reduce, flat)
    flat = (flat / world_size()).to(grads[0].device)
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def agree_outcome(error: BaseException | None) -> None:
    """Every rank reached this point, maybe with an error of its own (setup on bad input): if any
    rank has one, every rank raises. The lowest rank that failed raises its own error, marked
    `rank_specific` when it is not rank 0, so the CLI prints exactly one line; the others raise
    ElsewhereError, which prints nothing."""
    if not active():
        if error is not None:
            raise error
        return
    message = None if error is None else (str(error) if isinstance(error, GanforgeError)
                                           else f"{type(error).__name__}: {error}")
    outcomes = gather_json(message)
    failed = [r for r, m in enumerate(outcomes) if m is not None]
    if not failed:
        return
    if rank() == failed[0]:
        if not isinstance(error, GanforgeError):
            raise error
        error.rank_specific = rank() != 0
        if error.rank_specific:
            error.args = (f"rank {rank()}: {error}",)
        raise error
    raise ElsewhereError(outcomes[failed[0]])


def attempt(fn: Callable[..., Any], *args) -> GanforgeError | None:
    """`fn(*args)`; the one-line error it raised, or None (anything else propagates)."""
    try:
        fn(*args)
    except GanforgeError as err:
        return err
    return None


def main_first(fn: Callable[..., Any], *args) -> None:
    """`fn(*args)` on rank 0, then on the other ranks (rank 0 may fill caches that they read),
    with every rank learning after each round whether any failed (`agree_outcome`): bad input
    stops all of them with one line. One process just runs it."""
    agree_outcome(attempt(fn, *args) if is_main() else None)
    agree_outcome(None if is_main() else attempt(fn, *args))


def main_decides(fn: Callable[[], T]) -> T | None:
    """Run `fn` on the main rank only and tell every rank how it went: a GanforgeError there (bad
    input, a refused run folder) is raised on the other ranks as ElsewhereError, whose line the
    CLI does not repeat. Returns fn's result on the main rank, None elsewhere."""
    if not active():
        return fn()
    result, message = None, None
    if is_main():
        try:
            result = fn()
        except BaseException as err:
            message = str(err) if isinstance(err, GanforgeError) else f"rank 0 failed ({type(err).__name__})"
            broadcast_json({"error": message})
            raise
        broadcast_json({"error": None})
        return result
    outcome = broadcast_json(None)
    if outcome["error"] is not None:
        raise ElsewhereError(outcome["error"])
    return None
