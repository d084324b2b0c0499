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

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "META_FILE", "STATE_VERSION", "TENSORS_FILE",
           "build_for_state", "capture_rng", "check_state_fits", "check_state_meta", "list_checkpoints", "load_checkpoint", "load_error", "load_latest", "module_state",
           "pack_optimizer", "pack_state", "refuse_pickle", "restore_rank_rng", "restore_rng",
           "save_checkpoint", "sha256_hex", "torch_load_weights_only", "unpack_optimizer", "unpack_state",
           "upgrade_state"]
