"""Device-resident batching: index tensors drawn on the training device, no DataLoader.

With the whole dataset in (device) memory, a batch is ``images[sampler.indices(step)]``. The
indices of a step are a pure function of (seed, step), so resuming at step k reproduces exactly the
batches an uninterrupted run would have drawn, and a checkpoint needs no sampler state.
"""

from __future__ import annotations

import hashlib
import math

import torch

from ganforge.errors import ConfigError

MODES = ("epoch", "replacement")


def _derived_seed(*parts: object) -> int:
    """A 63-bit seed from a tuple, well mixed so (seed, epoch) pairs never collide in practice."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class BatchSampler:
    """Draws batches of indices from N items, on `device`, deterministically from `seed`.

    mode "epoch": every epoch is a fresh permutation (generator seeded by (seed, epoch)); the last
    partial batch is kept unless drop_last. mode "replacement": each batch is
    ``randint(0, n, (batch_size,))`` seeded by (seed, step), like the Keras tutorials'
    ``np.random.randint`` loops; an "epoch" is then just ceil(n / batch_size) steps.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        mode: str = "epoch",
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown sampling mode {mode!r}: choose one of {', '.join(MODES)}")
        if n < 1 or batch_size < 1:
            raise ConfigError(
                f"need at least one item and a positive batch size, got n={n}, batch_size={batch_size}"
            )
        if mode == "epoch" and drop_last and batch_size > n:
            raise ConfigError(
                f"batch size {batch_size} is larger than the dataset ({n} items) and drop_last is set: "
                "lower the batch size"
            )
        self.n, self.batch_size, self.mode, self.drop_last = n, batch_size, mode, drop_last
        self.seed = seed
        self.device = torch.device(device)
        if mode == "epoch" and drop_last:
            self.steps_per_epoch = n // batch_size
        else:
            self.steps_per_epoch = math.ceil(n / batch_size)
        self._epoch: int | None = None  # epoch whose permutation is cached
        self._perm: torch.Tensor | None = None

    def epoch(self, step: int) -> int:
        """0-based epoch that global step `step` belongs to."""
        return step // self.steps_per_epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            # Drawn on a CPU generator, then moved: CPU streams are reproducible across devices.
            generator = torch.Generator().manual_seed(_derived_seed("epoch", self.seed, epoch))
            self._perm = torch.randperm(self.n, generator=generator).to(self.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        """int64 indices of global step `step` (0-based), on `device`; a pure function of (seed, step)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.mode == "replacement":
            generator = torch.Generator().manual_seed(_derived_seed("replacement", self.seed, step))
            return torch.randint(0, self.n, (self.batch_size,), generator=generator).to(self.device)
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]
