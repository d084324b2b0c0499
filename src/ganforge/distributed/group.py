"""The process group: who this process is among the run's, joining and leaving the group, and the
collectives' error handling that the other modules of this package use.

torchrun starts one process per device and tells each its place through the environment (`RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, ...). :func:`init` joins the process group from there (nccl on CUDA,
gloo on the CPU). In one process everything here answers as rank 0 of 1.
"""

from __future__ import annotations

import datetime
import gc
import os
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from ganforge.errors import GanforgeError
from ganforge.speed.cpu import cores, set_threads

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits longer than this gives up


class ElsewhereError(GanforgeError):
    """Rank 0 refused the run (bad input); the other ranks stop with it without repeating its line."""


class PeerLost(GanforgeError):
    """A collective failed: another process of the run stopped or was killed."""


def launched() -> bool:
    """Whether torchrun (or any launcher that sets its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_world_size() -> int:
    """The world size torchrun announced (1 without torchrun), before the group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def env_rank() -> int:
    return int(os.environ.get("RANK", "0")) if launched() else 0


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched() else 1


def relaunch(command: str) -> str:
    """`command` ("ganforge train --resume") as a person should rerun it: with ``--nproc N`` before
    its options when this is one of N processes on this machine, so that a resume hint keeps the
    processes the run had."""
    n = local_world_size()
    if n <= 1:
        return command
    head, sep, options = command.partition(" --")
    return f"{head} --nproc {n}{sep}{options}" if sep else f"{command} --nproc {n}"


def is_main() -> bool:
    return rank() == 0


def restart_count() -> int:
    """How many times torchrun's elastic agent restarted the workers (`--max-restarts`)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (when launched by it) and return this rank's device: on CUDA
    the GPU of its local rank. Without torchrun, or when already joined, `device` unchanged."""
    if not launched() or not dist.is_available():
        return device
    if device.type == "cuda" and torch.cuda.is_available():
        if device.index is None:
            device = torch.device("cuda", local_rank() % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # nccl for CUDA tensors (DDP, SyncBatchNorm), gloo for the small CPU-side exchanges.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        from torch.distributed.rendezvous import rendezvous

        # The store torchrun's environment names, with keys of this attempt only: after an elastic
        # restart the store can still hold the failed attempt's addresses, which the new
        # processes would try to connect to.
        store, at, world = next(rendezvous("env://", timeout=TIMEOUT))
        store = dist.PrefixStore(f"ganforge/attempt-{restart_count()}/", store)
        dist.init_process_group(backend, store=store, rank=at, world_size=world, timeout=TIMEOUT)
    return device


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        # DDP wrappers left in reference cycles keep the group's gloo threads and their pending work
        # alive until the interpreter's finalisation, where freeing them aborts the process
        # ("terminate called without an active exception"): free them while Python is whole.
        gc.collect()
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where the small exchanges of this module run: on the CPU (gloo), whatever the training
    device; DDP and SyncBatchNorm use nccl for CUDA tensors."""
    return torch.device("cpu")


def _collective(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a collective; a peer that died turns into one PeerLost line instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ConnectionError) as err:
        from ganforge.io import first_line

        raise PeerLost(f"rank {rank()} lost contact with the other processes of the run "
                       f"({first_line(err)})") from None


def lost_peer(err: BaseException) -> PeerLost | None:
    """`err` (raised inside DDP or SyncBatchNorm) as PeerLost when it is a failed collective of an
    active process group; None otherwise."""
    # Not `dist.is_initialized()`: the group may already be torn down (`destroy` runs in a finally)
    # by the time the error reaches the command's handler.
    if not launched() or env_world_size() < 2:
        return None
    dist_error = getattr(dist, "DistError", ())
    text = str(err)
    if isinstance(err, dist_error) or any(s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed",
                                                              "Connection reset", "Broken pipe")):
        from ganforge.io import first_line

        return PeerLost(f"rank {rank()} lost contact with the other processes of the run ({first_line(err)})")
    return None


def barrier() -> None:
    if active():
        _collective(dist.barrier)


def place_process(device: torch.device, threads: int) -> tuple[torch.device, int]:
    """This process's device and CPU threads: under torchrun a CUDA device becomes the rank's own
    GPU, and `threads` 0 (every core) becomes this process's share of the node's cores. Sets
    torch's intra-op threads on the CPU. Returns (device, threads in use)."""
    if world_size() > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cpu":
        return device, torch.get_num_threads()
    share = threads or (max(1, cores() // local_world_size()) if world_size() > 1 else 0)
    return device, set_threads(share)
