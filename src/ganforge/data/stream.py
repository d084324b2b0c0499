"""Batches of a folder too big to keep decoded: a DataLoader whose workers decode ahead of the step.

The batch indices still come from :class:`~ganforge.data.sampler.BatchSampler`, a pure function of
(seed, step), so a streamed run draws exactly the batches an in-memory run of the same folder
would, and resumes at step k exactly as an uninterrupted run goes on. Workers decode the files of
the next batches while the model trains; on CUDA the batches arrive in pinned memory and are copied
without blocking. A class folder's batches come with the labels of the files actually decoded (a
file that turned unreadable is stood in for by another, and so is its label).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from ganforge.data.sampler import BatchSampler
from ganforge.errors import DataError
from ganforge.io import first_line

PREFETCH = 4  # batches each worker decodes ahead


class _Draws:
    """The sampler's index lists from draw `start` on, in order (a DataLoader batch_sampler)."""

    def __init__(self, sampler: BatchSampler, start: int) -> None:
        self.sampler, self.start = sampler, start

    def __iter__(self) -> Iterator[list[int]]:
        for draw in itertools.count(self.start):
            yield self.sampler.indices(draw).tolist()


class _Items(torch.utils.data.Dataset):
    """A FolderStream's items with the index of the file each one came from (for its label)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, tuple[int, ...]]:
        return self.dataset.load(i)


def _collate(items: list[tuple[torch.Tensor, int, tuple[int, ...]]]
             ) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
    images = torch.stack([image for image, _, _ in items])
    sources = torch.tensor([j for _, j, _ in items], dtype=torch.int64)
    return images, sources, {i for _, _, bad in items for i in bad}


def default_workers(cores: int) -> int:
    """Decoding workers when `workers=0`: the cores, up to 8, leaving one to the step from 4 up."""
    return max(1, min(8, cores - 1 if cores >= 4 else cores))


class StreamBatches:
    """`get(draw)` returns the draw-th batch as uint8 N x C x S x S (pinned when `pin_memory`) and
    the indices of the files that were unreadable and stood in for by another; `get(draw,
    with_labels=True)` adds the int64 labels of the images (a class folder's; None otherwise) between
    the two. Draws are expected in order; asking for another one (a resume, a rollback) restarts the
    workers there."""

    def __init__(self, dataset, sampler: BatchSampler, *, workers: int, pin_memory: bool) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.workers, self.pin_memory = workers, pin_memory
        self._batches: Iterator | None = None
        self._next = -1

    def _start(self, draw: int) -> None:
        self.close()
        loader = DataLoader(
            _Items(self.dataset), batch_sampler=_Draws(self.sampler, draw), num_workers=self.workers,
            collate_fn=_collate, pin_memory=self.pin_memory,
            prefetch_factor=PREFETCH if self.workers else None,
        )
        self._batches, self._next = iter(loader), draw

    def get(self, draw: int, with_labels: bool = False) -> tuple:
        if self._batches is None or draw != self._next:
            self._start(draw)
        assert self._batches is not None
        try:
            images, sources, unreadable = next(self._batches)
        except DataError as err:  # raised in a worker: keep its message, drop the worker traceback
            raise DataError(_original_message(err)) from None
        except (RuntimeError, ConnectionError, EOFError) as err:
            died = worker_died(err)
            if died is None:
                raise
            raise DataError(died) from None
        self._next += 1
        if not with_labels:
            return images, unreadable
        labels = self.dataset.labels
        return images, (labels[sources] if labels is not None else None), unreadable

    def close(self) -> None:
        """Stop the workers (they also exit on their own when this process ends)."""
        shutdown = getattr(self._batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._batches = None


def worker_died(err: BaseException) -> str | None:
    """The one-line message for an exception that means a DataLoader worker died (PyTorch raises it
    from its SIGCHLD handler, or as a broken or closed result queue), else None."""
    if isinstance(err, RuntimeError) and "DataLoader worker" not in str(err):
        return None
    if not isinstance(err, (RuntimeError, ConnectionError, EOFError)):
        return None
    first = first_line(err, limit=1000).rstrip(". ")
    return f"a data-loading worker died ({first}); use workers=1 if workers keep dying"


def _original_message(err: Exception) -> str:
    """A worker's exception comes back with its traceback in the message; keep the last line's text."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")
