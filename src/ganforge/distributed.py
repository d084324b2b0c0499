"""Many processes: what a training loop needs to run under torchrun, whatever it trains.

torchrun starts one process per device and tells each its place through the environment (`RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, ...). :func:`init` joins the process group from there (nccl on CUDA,
gloo on the CPU); everything else here works the same in one process, where it does nothing:

- who am I: :func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main`, :func:`barrier`;
- the global batch: :func:`global_slice` / :func:`shard` give this rank its part of a batch every
  rank computed whole (the same indices and noise as one process), :func:`shard_range` its part
  of n items (evaluation), :func:`gather_rows` the parts back on the main rank;
- agreement: :func:`agree_max` (a stop flag, a signal number), :func:`all_true` (a step's
  non-finite guard), :func:`mean_across` (log windows), :func:`main_decides` (rank 0 does a
  step that may fail on bad input, and every rank learns the outcome);
- state: :func:`gather_json` (one JSON object per rank, e.g. RNG states), :func:`broadcast_state`
  (checkpoint tensors and meta from rank 0, sent as safetensors bytes and JSON: nothing pickled);
- BatchNorm over the global batch: :func:`convert_sync_batchnorm` (torch's SyncBatchNorm on CUDA,
  :class:`GlobalBatchNorm` on the CPU, where torch's needs a GPU).

It imports nothing of a task, so the GAN trainer and the detector trainer share it.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.speed.cpu import cores, set_threads

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits longer than this gives up


class ElsewhereError(GanforgeError):
    """Rank 0 refused the run (bad input); the other ranks stop with it without repeating its line."""


class PeerLost(GanforgeError):
    """A collective failed: another process of the run stopped or was killed."""


# ---- who am I -----------------------------------------------------------------------------------------

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


# ---- the global batch ----------------------------------------------------------------------------------

def global_slice(n: int, at: int | None = None, world: int | None = None) -> slice:
    """Rank `at`'s part of n items split in world-size contiguous parts, as torch.tensor_split cuts
    them (the first n % world parts hold one more)."""
    at = rank() if at is None else at
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = at * base + min(at, extra)
    return slice(start, start + base + (1 if at < extra else 0))


def shard(x: Any) -> Any:
    """This rank's rows of a tensor (or of each tensor of a dict) that every rank holds whole."""
    if not active():
        return x
    if isinstance(x, dict):
        return {k: shard(v) for k, v in x.items()}
    return x[global_slice(x.shape[0])]


class ShardedSampler:
    """A batch sampler whose batches are this rank's part of the wrapped sampler's global ones
    (a streamed folder then decodes only that part)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def indices(self, step: int) -> torch.Tensor:
        return shard(self.sampler.indices(step))

    def __getattr__(self, name: str):
        return getattr(self.sampler, name)


def shard_range(n: int) -> range:
    """This rank's part of items 0..n-1 (evaluation: each rank extracts features of its share)."""
    part = global_slice(n)
    return range(part.start, part.stop)


def check_divides(n: int, what: str, fix: str, world: int | None = None) -> None:
    """One line when `n` (a global batch) does not split evenly over the processes (`world`,
    default: this run's)."""
    if world is None:
        world = env_world_size() if not active() else world_size()
    if world > 1 and n % world:
        from ganforge.errors import ConfigError

        raise ConfigError(f"{what} {n} does not divide by the {world} processes: {fix}")


def gather_rows(x: torch.Tensor) -> torch.Tensor | None:
    """Every rank's rows of `x` (the same trailing shape, any number of rows), concatenated in rank
    order on the main rank (None elsewhere); `x` itself in one process."""
    if not active():
        return x
    dev = _comm_device()
    rows = torch.tensor([x.shape[0]], device=dev)
    sizes = [torch.zeros_like(rows) for _ in range(world_size())]
    _collective(dist.all_gather, sizes, rows)
    sizes = [int(s) for s in sizes]
    most = max(sizes)
    padded = torch.zeros(most, *x.shape[1:], dtype=x.dtype, device=dev)
    padded[:x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    _collective(dist.all_gather, parts, padded)
    if not is_main():
        return None
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(x.device)


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


# ---- agreement -----------------------------------------------------------------------------------------

def agree_max(*values: int) -> tuple[int, ...]:
    """The largest of each value over the ranks (stop flags, a signal number: any rank's counts),
    in one all-reduce."""
    if not active():
        return tuple(int(v) for v in values)
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=_comm_device())
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return tuple(int(v) for v in t.tolist())


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


# ---- state: bytes between ranks, never pickled ----------------------------------------------------------

def _broadcast_bytes(data: bytes | None) -> bytes:
    dev = _comm_device()
    size = torch.tensor([len(data) if is_main() and data is not None else 0], dtype=torch.int64, device=dev)
    _collective(dist.broadcast, size, 0)
    n = int(size.item())
    if is_main():
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if n else torch.empty(0, dtype=torch.uint8, device=dev)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=dev)
    if n:
        _collective(dist.broadcast, buf, 0)
    return bytes(buf.cpu().numpy().tobytes())


def broadcast_json(obj: Any) -> Any:
    """Rank 0's JSON-able `obj` on every rank."""
    if not active():
        return obj
    data = json.dumps(obj).encode() if is_main() else None
    return json.loads(_broadcast_bytes(data).decode())


def gather_json(obj: Any) -> list[Any]:
    """Every rank's JSON-able `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    dev = _comm_device()
    data = json.dumps(obj).encode()
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    _collective(dist.all_gather, sizes, size)
    most = max(int(s) for s in sizes)
    buf = torch.zeros(most, dtype=torch.uint8, device=dev)
    buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    parts = [torch.empty_like(buf) for _ in sizes]
    _collective(dist.all_gather, parts, buf)
    return [json.loads(bytes(p[:int(s)].cpu().numpy().tobytes()).decode()) for p, s in zip(parts, sizes)]


def broadcast_state(tensors: dict[str, torch.Tensor] | None, meta: dict | None
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Rank 0's checkpoint (tensors, meta) on every rank, so only rank 0 needs the run folder.
    The tensors travel as safetensors bytes and the meta as JSON."""
    if not active():
        return tensors, meta
    from safetensors.torch import load, save

    blob = None
    if is_main():
        blob = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    got = load(_broadcast_bytes(blob))
    return (tensors if is_main() else got), broadcast_json(meta)


def no_buffer_sync() -> dict[str, bool]:
    """DDP's option for not copying rank 0's buffers into the others at every forward (BatchNorm
    statistics are global already with SyncBatchNorm, and per rank by choice without), under the
    name this torch version gives it."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}


# ---- BatchNorm over the global batch -------------------------------------------------------------------

class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, differentiable: the gradient of each rank's input is
    the sum over the ranks of the gradients that reach the result."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        _collective(dist.all_reduce, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        _collective(dist.all_reduce, grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over every rank (gloo on
    the CPU, where torch.nn.SyncBatchNorm needs a GPU). The mean and the (biased) variance are
    all-reduced in two passes, as a single process computes them over the whole batch; the
    all-reduce is differentiable, so each rank's gradient includes what its inputs did to the
    other ranks' normalisation. One process, eval mode or frozen statistics: plain BatchNorm.
    Parameters and buffers are BatchNorm's, so checkpoints do not tell the two apart."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        all_reduce = _SumOverRanks.apply
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64, device=input.device)
        _collective(dist.all_reduce, count)
        n = float(count.item())
        x = input.float()
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm computing its statistics over the global batch: torch's
    SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere. Weights, buffers and settings carry over."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.to(next(iter(module.state_dict().values())).device)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        converted = _convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


# ---- the launcher: `ganforge ... --nproc N` --------------------------------------------------------------

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
