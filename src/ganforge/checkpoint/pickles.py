"""Refusing pickles: checkpoints made with `torch.save` can run code when loaded, so ganforge never
unpickles them; plain weights can be imported through torch's restricted loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganforge.checkpoint.store import MANIFEST_FILE
from ganforge.errors import CheckpointError
from ganforge.io import first_line

_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}


def refuse_pickle(path: str | Path) -> None:
    """Raise :class:`CheckpointError` if ``path`` is a pickle-based checkpoint (torch zip or raw pickle).

    Only the first bytes and the suffix are inspected; the file is never unpickled. Returns quietly
    for files that look like neither, so the caller can report them in its own words.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err}): check the path") from None
    is_zip = head.startswith(b"PK\x03\x04")  # torch.save's default container
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # PROTO opcode
    if is_zip or is_pickle or path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle-based checkpoint, which can run code when loaded; ganforge only loads "
            f"safetensors checkpoints (a folder with {MANIFEST_FILE}): convert it where you trust its origin")


def torch_load_weights_only(path: str | Path) -> Any:
    """Import plain weights saved with ``torch.save``, refusing anything beyond tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the restricted unpickler raises several types
        raise CheckpointError(f"{path} holds more than plain weights, and loading it could run code "
                              f"({first_line(err)}): refusing to load it") from None
