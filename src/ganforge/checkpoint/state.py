"""Training state as named parts: any set of modules and optimizers, per-rank RNG, and counters.

`pack_state({"G": G, "D": D, "G_ema": ema}, {"G": opt_g, "D": opt_d})` gives the flat tensors and
the JSON meta of a checkpoint; `unpack_state` puts them back. A detector packs `{"net": net}` the
same way. Tensor names are `module.<name>.<key>`, `optim.<name>.state.<index>.<key>` and
`rng.<rank>.<generator>`; the meta records the module names, each optimizer's groups and learning
rate, and one RNG slot per rank. Checkpoints of the first layout (state version 1: `G.`/`D.`/`EMA.`
prefixes, `opt_g`/`opt_d`, one RNG state) are upgraded on load by :func:`upgrade_state`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ganforge.errors import CheckpointError

STATE_VERSION = 2
# State version 1 names -> version 2 names.
_V1_PREFIXES = {"G.": "module.G.", "D.": "module.D.", "EMA.": "module.G_ema.", "rng.rng.": "rng.0."}
_V1_OPTIMIZERS = {"opt_g": "G", "opt_d": "D"}
_V1_LR = {"g": "G", "d": "D"}


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``value``; tensors go to ``tensors[key]``, tuples are tagged to come back."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"cannot store {key} in a checkpoint: dict keys must be strings")
        return {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store {key} ({type(value).__name__}) in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            if value["__tensor__"] not in tensors:
                raise CheckpointError(
                    f"checkpoint is missing tensor {value['__tensor__']!r}: use an earlier checkpoint")
            return tensors[value["__tensor__"]]
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def pack_optimizer(state_dict: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors named ``prefix.state.<idx>.<key>`` and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    state = {str(idx): _encode(per_param, f"{prefix}.state.{idx}", tensors)
             for idx, per_param in state_dict["state"].items()}
    groups = _encode(state_dict["param_groups"], f"{prefix}.param_groups", tensors)
    return tensors, {"state": state, "param_groups": groups}


def unpack_optimizer(tensors: dict[str, torch.Tensor], meta_part: dict, prefix: str) -> dict:
    """Inverse of :func:`pack_optimizer`: a dict for ``optimizer.load_state_dict``."""
    del prefix  # Tensor names are recorded in meta_part; the prefix only shaped them when packing.
    # JSON turned the integer parameter ids into strings; torch matches them as ints.
    state = {int(idx): _decode(per_param, tensors) for idx, per_param in meta_part["state"].items()}
    return {"state": state, "param_groups": _decode(meta_part["param_groups"], tensors)}


def capture_rng(cuda: bool | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Python, NumPy, torch CPU and (if ``cuda``, default: when available) CUDA RNG states."""
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors = {"rng.torch": torch.get_rng_state()}
    use_cuda = torch.cuda.is_available() if cuda is None else cuda and torch.cuda.is_available()
    cuda_states = torch.cuda.get_rng_state_all() if use_cuda else []
    for i, device_state in enumerate(cuda_states):
        tensors[f"rng.cuda.{i}"] = device_state
    meta = {
        "python": [version, list(internal), gauss_next],
        "numpy": [bit_generator, keys.tolist(), pos, has_gauss, cached_gaussian],
        "cuda_devices": len(cuda_states),
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta_part: dict) -> None:
    """Restore what :func:`capture_rng` captured (CUDA: as many devices as both runs have)."""
    version, internal, gauss_next = meta_part["python"]
    random.setstate((version, tuple(internal), gauss_next))
    bit_generator, keys, pos, has_gauss, cached_gaussian = meta_part["numpy"]
    np.random.set_state((bit_generator, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(tensors["rng.torch"].to("cpu", torch.uint8))
    saved = meta_part.get("cuda_devices", 0)
    if saved and torch.cuda.is_available():
        for i in range(min(saved, torch.cuda.device_count())):
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"].to("cpu", torch.uint8), i)



# ---- named modules and optimizers ---------------------------------------------------------------------

def pack_state(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], *,
               rng: list[tuple[dict[str, torch.Tensor], dict]] | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of the named modules and optimizers, and of one RNG state per rank (`rng`,
    index = rank; default: this process's as rank 0). Callers add their counters to the meta."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"module.{name}.{k}": v for k, v in module.state_dict().items()})
    packed = {}
    for name, opt in optimizers.items():
        opt_tensors, packed[name] = pack_optimizer(opt.state_dict(), f"optim.{name}")
        tensors.update(opt_tensors)
    rng_meta = {}
    for rank, (rng_tensors, meta_part) in enumerate(rng if rng is not None else [capture_rng()]):
        tensors.update({f"rng.{rank}.{k.removeprefix('rng.')}": v for k, v in rng_tensors.items()})
        rng_meta[str(rank)] = meta_part
    meta = {"state_version": STATE_VERSION, "modules": list(modules), "optimizers": packed,
            "lr": {name: opt.param_groups[0]["lr"] for name, opt in optimizers.items()}, "rng": rng_meta}
    return tensors, meta


def upgrade_state(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A state of the first layout (version 1), renamed to the current one; others unchanged."""
    if meta.get("state_version", 1) >= STATE_VERSION:
        return tensors, meta
    renamed = {}
    for key, value in tensors.items():
        for old, new in _V1_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    meta = dict(meta, state_version=STATE_VERSION,
                modules=[n for n in ("G", "D", "G_ema") if any(k.startswith(f"module.{n}.") for k in renamed)],
                optimizers={_V1_OPTIMIZERS.get(k, k): v for k, v in meta.get("optimizers", {}).items()},
                lr={_V1_LR.get(k, k): v for k, v in meta.get("lr", {}).items()},
                rng={"0": meta["rng"]} if "rng" in meta else {})
    return renamed, meta


def module_state(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The state dict of module `name` inside a packed state."""
    prefix = f"module.{name}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[(.*?)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[(.*?)\]\)")


def load_error(err: BaseException) -> str:
    """The line of a `load_state_dict` error that names the tensor (PyTorch's first line only names
    the module class): 'tensor head.1.weight is 4096x12544 in the checkpoint, 256x12544 in the model
    its config builds', or the missing or unexpected keys."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
    match = _SIZE_MISMATCH.search(detail)
    if match:
        saved, built = ("x".join(d.strip() for d in shape.split(",")) or "a scalar" for shape in match.groups()[1:])
        return f"tensor {match[1]} is {saved} in the checkpoint, {built} in the model its config builds"
    return detail[:300].rstrip(". ")


def check_state_fits(build: Callable[[], nn.Module], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Build `build`'s module on the meta device and load `state` into it there, which checks the
    keys and shapes without memory: a config that asks for other (or absurd) sizes than the
    checkpoint holds is refused naming the tensor, before anything is allocated. Returns the meta
    module, now holding the state's tensors. `what` names the checkpoint in messages."""
    try:
        with torch.device("meta"):
            module = build()
        module.load_state_dict(state, assign=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{what} does not match its config ({load_error(err)}): use a checkpoint "
                              "written with this config") from None
    return module


def build_for_state(build: Callable[[], nn.Module], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """The module `build` makes, holding `state`, checked first by :func:`check_state_fits`. It
    takes the state's tensors as they are; only when that leaves part of it on the meta device, or
    changes a dtype, is it built for real (no larger than the checkpoint, now checked)."""
    with torch.device("meta"):
        dtypes = {k: v.dtype for k, v in build().state_dict().items()}
    module = check_state_fits(build, state, what)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())) or any(
            dtypes.get(k, v.dtype) != v.dtype for k, v in module.state_dict().items()):
        module = build()
        module.load_state_dict(state)
    return module


def unpack_state(tensors: dict[str, torch.Tensor], meta: dict, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], *, what: str = "config") -> None:
    """Load the named modules and optimizers from a (possibly version-1) packed state. Anything
    that does not fit (a missing part, other shapes) is one CheckpointError naming `what`."""
    tensors, meta = upgrade_state(tensors, meta)
    try:
        for name, module in modules.items():
            if name not in meta.get("modules", []):
                raise KeyError(f"no module {name!r} in the checkpoint")
            module.load_state_dict(module_state(tensors, name))
        for name, opt in optimizers.items():
            opt.load_state_dict(unpack_optimizer(tensors, meta["optimizers"][name], f"optim.{name}"))
    except (RuntimeError, ValueError, KeyError) as err:  # tensors that do not fit the config
        raise CheckpointError(f"checkpoint does not match its {what} ({load_error(err)}): "
                              "it cannot be resumed") from None


def restore_rank_rng(tensors: dict[str, torch.Tensor], meta: dict, rank: int = 0) -> bool:
    """Restore rank `rank`'s RNG states; False when the checkpoint has no slot for that rank (it
    was written by fewer processes)."""
    tensors, meta = upgrade_state(tensors, meta)
    slot = meta.get("rng", {}).get(str(rank))
    if slot is None:
        return False
    prefix = f"rng.{rank}."
    restore_rng({"rng." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, slot)
    return True


def check_state_meta(meta: dict) -> None:
    """Raise CheckpointError for a meta that verified but cannot be a training state (edited by
    hand, or written by another tool): `load_latest(check=...)` then falls back to an earlier one."""
    kinds = {"step": int, "images_seen": int, "seconds": (int, float), "config": dict, "model": str,
             "optimizers": dict, "rng": dict}
    bad = [key for key, kind in kinds.items()
           if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)]
    if not bad and meta["step"] < 0:
        bad = ["step"]
    if bad:
        raise CheckpointError(f"its meta.json is malformed ({', '.join(bad)})")
