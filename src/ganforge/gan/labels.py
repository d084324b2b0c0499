"""Class labels of a conditional run: where they come from, how they travel, how a person asks.

A conditional run takes its number of classes from its data's labels when it starts (every
registered dataset, and a folder with one subfolder per class) and keeps it in its config. The
labels of a real batch travel with it as a device tensor: looked up by index for a dataset held on
the device, or decoded with the images of a streamed class folder.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ganforge.errors import ConfigError
from ganforge.io import display_path

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # indices or images, or (images, labels)


def resolve_classes(cfg, data):
    """`cfg` with `num_classes` taken from `data`; one line when a conditional config meets data
    without labels. (A resumed run whose data now has another number of classes is refused when its
    checkpoint does not fit the networks.)"""
    if cfg.conditional == "none":
        return cfg
    classes = data.num_classes if data.labels is not None else None
    if not classes:
        raise ConfigError(
            f"{cfg.recipe} is a conditional recipe (conditional={cfg.conditional}) but "
            f"{display_path(cfg.data)} has no labels: use a labelled dataset (mnist, fashion-mnist, cifar10, "
            "cifar100, mnist5k, digits), a folder with one subfolder per class, or conditional=none")
    return replace(cfg, num_classes=int(classes))


def batch_with_labels(images: torch.Tensor, labels: torch.Tensor | None, device) -> Batch:
    """A streamed batch and its labels on the training device."""
    images = images.to(device, non_blocking=True)
    return images if labels is None else (images, labels.to(device, non_blocking=True))


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(indices or images, labels when they travel with the batch)."""
    return (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)


def batch_size(batch: Batch) -> int:
    return split_batch(batch)[0].shape[0]


def parse_labels(text: str | None, label: int | None, num_classes: int, run_dir) -> list[int] | None:
    """`--label K` or `--labels 0,1,2` -> the class list; one line for an unconditional run, a
    label out of range, or a malformed list."""
    if text is None and label is None:
        return None
    if not num_classes:
        raise ConfigError(f"{display_path(str(run_dir))} is not a conditional run: it has no classes to ask "
                          "for; drop --label/--labels")
    if text is not None:
        try:
            wanted = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"bad value --labels {text!r}: write class numbers separated by commas, "
                              "e.g. 0,1,2") from None
        if not wanted:
            raise ConfigError("--labels is empty: write class numbers separated by commas, e.g. 0,1,2")
    else:
        wanted = [label]
    bad = [k for k in wanted if not 0 <= k < num_classes]
    if bad:
        raise ConfigError(f"label {bad[0]} is out of range: this run has {num_classes} classes, "
                          f"0 to {num_classes - 1}")
    return wanted
