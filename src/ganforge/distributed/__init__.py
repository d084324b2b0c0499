"""Many processes: what a training loop needs to run under torchrun, whatever it trains.

torchrun starts one process per device and tells each its place through the environment (`RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, ...). :func:`init` joins the process group from there (nccl on CUDA,
gloo on the CPU); everything else here works the same in one process, where it does nothing. One
idea per module, all importable from here:

- :mod:`.group`, who am I: :func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main`,
  :func:`barrier`, :func:`place_process` (this rank's device and threads);
- :mod:`.sharding`, the global batch: :func:`global_slice` / :func:`shard` give this rank its part of
  a batch every rank computed whole (the same indices and noise as one process), :func:`shard_range`
  its part of n items (evaluation), :func:`gather_rows` the parts back on the main rank and
  :func:`all_rows` on every rank;
- :mod:`.agreement`: :func:`agree_max` (a stop flag, a signal number), :func:`all_true` (a step's
  non-finite guard), :func:`mean_across` (log windows), :func:`main_decides` (rank 0 does a step that
  may fail on bad input, and every rank learns the outcome);
- :mod:`.transport`, state: :func:`gather_json` (one JSON object per rank, e.g. RNG states),
  :func:`broadcast_state` (checkpoint tensors and meta from rank 0, sent as safetensors bytes and
  JSON: nothing pickled);
- :mod:`.batchnorm`, BatchNorm over the global batch: :func:`convert_sync_batchnorm` (torch's
  SyncBatchNorm on CUDA, :class:`GlobalBatchNorm` on the CPU, where torch's needs a GPU).

It imports nothing of a task, so every trainer shares it. Starting the processes (`--nproc N`) is
the command line's business: `ganforge.launch`.
"""

from ganforge.distributed.agreement import (agree_max, agree_outcome, all_true, attempt, average_grads, main_decides,
                                            main_first, mean_across)
from ganforge.distributed.batchnorm import GlobalBatchNorm, convert_sync_batchnorm, no_buffer_sync
from ganforge.distributed.group import (TIMEOUT, ElsewhereError, PeerLost, active, backend_for, barrier, destroy,
                                        env_rank, env_world_size, init, is_main, launched, local_rank,
                                        local_world_size, lost_peer, place_process, rank, relaunch, restart_count,
                                        world_size)
from ganforge.distributed.sharding import (ShardedSampler, all_rows, check_divides, gather_rows, global_slice,
                                           shard, shard_range)
from ganforge.distributed.transport import broadcast_json, broadcast_state, gather_json

__all__ = ["TIMEOUT", "ElsewhereError", "GlobalBatchNorm", "PeerLost", "ShardedSampler", "active", "agree_max",
           "agree_outcome", "all_rows", "all_true", "attempt", "average_grads", "backend_for", "barrier", "broadcast_json",
           "broadcast_state", "check_divides", "convert_sync_batchnorm", "destroy", "env_rank", "env_world_size",
           "gather_json", "gather_rows", "global_slice", "init", "is_main", "launched", "local_rank",
           "local_world_size", "lost_peer", "main_decides", "main_first", "mean_across", "no_buffer_sync",
           "place_process", "rank", "relaunch", "restart_count", "shard", "shard_range", "world_size"]
