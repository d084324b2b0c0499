"""Bytes between the ranks, never pickled: JSON objects from rank 0 or from every rank, and a
checkpoint's tensors (as safetensors bytes) with its meta (as JSON). In one process each call
returns what it was given.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.distributed as dist

from ganforge.distributed.group import _collective, _comm_device, active, is_main, world_size


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
