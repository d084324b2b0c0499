"""Checkpoints: atomic, verified, pickle-free folders (:mod:`.store`) of named training state
(:mod:`.state`)."""

from ganforge.checkpoint.pickles import refuse_pickle, torch_load_weights_only
from ganforge.checkpoint.state import (STATE_VERSION, build_for_state, capture_rng, check_state_fits, check_state_meta, load_error, module_state,
                                       pack_optimizer, pack_state,
                                       restore_rank_rng, restore_rng, unpack_optimizer, unpack_state,
                                       upgrade_state)
from ganforge.checkpoint.store import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE, META_FILE, TENSORS_FILE,
                                       list_checkpoints, load_checkpoint, load_latest, save_checkpoint,
                                       sha256_hex)



def load_named(root, checkpoint=None):
    """(path, tensors, meta) of `checkpoint` (a name inside `root`, such as `best`, or a checkpoint
    folder), or of the newest checkpoint in `root` that verifies when `checkpoint` is None."""
    from pathlib import Path

    from ganforge.errors import CheckpointError
    from ganforge.io import display_path

    root = Path(root)
    if not checkpoint:
        return load_latest(root, purpose="using")
    path = Path(checkpoint) if Path(checkpoint).is_dir() else root / checkpoint
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint {checkpoint!r} in {display_path(root)}: use a name there (e.g. best) "
                              "or a checkpoint folder")
    return (path, *load_checkpoint(path))


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "META_FILE", "STATE_VERSION", "TENSORS_FILE",
           "build_for_state", "capture_rng", "check_state_fits", "check_state_meta", "list_checkpoints", "load_checkpoint", "load_error", "load_latest", "load_named", "module_state",
           "pack_optimizer", "pack_state", "refuse_pickle", "restore_rank_rng", "restore_rng",
           "save_checkpoint", "sha256_hex", "torch_load_weights_only", "unpack_optimizer", "unpack_state",
           "upgrade_state"]
