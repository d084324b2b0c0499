"""What a generator takes, declared once: noise z ~ N(0, I), and optionally a class label.

One :class:`LatentSpec` serves training (fresh latents each step), the fixed grid that shows
progress, `ganforge sample` and evaluation, so they can never disagree on what G's input is. A
latent batch is a dict of tensors (`z`; `labels` for a conditional model; `codes` for InfoGAN, the
one-hot categorical code followed by the continuous ones): a pytree, so the compiled or captured
step takes it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Latent = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LatentSpec:
    latent_dim: int
    num_classes: int = 0  # > 0: G and D take a class label in [0, num_classes)
    categorical: int = 0  # InfoGAN: values of the categorical code (one-hot in `codes`)
    continuous: int = 0  # InfoGAN: continuous codes ~ U(-1, 1), after the one-hot part of `codes`

    @classmethod
    def from_config(cls, cfg) -> "LatentSpec":
        """The spec a GAN config's generator takes."""
        classes = cfg.num_classes if getattr(cfg, "conditional", "none") != "none" else 0
        return cls(cfg.latent_dim, classes, getattr(cfg, "info_categorical", 0), getattr(cfg, "info_continuous", 0))

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def code_dim(self) -> int:
        return self.categorical + self.continuous

    def codes(self, category: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """B x (categorical + continuous) codes: the one-hot category, then the continuous values."""
        parts = [torch.nn.functional.one_hot(category, self.categorical).to(continuous.dtype)] \
            if self.categorical else []
        return torch.cat(parts + [continuous], 1)

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Latent:
        """n fresh latents from `generator` (which lives on `device`)."""
        out = {"z": torch.randn(n, self.latent_dim, device=device, generator=generator)}
        if self.conditional:
            out["labels"] = torch.randint(0, self.num_classes, (n,), device=device, generator=generator)
        if self.code_dim:
            cat = torch.randint(0, max(self.categorical, 1), (n,), device=device, generator=generator)
            cont = torch.rand(n, self.continuous, device=device, generator=generator) * 2 - 1
            out["codes"] = self.codes(cat, cont)
        return out

    def fixed(self, n: int, seed: int, device: torch.device | str = "cpu", columns: int | None = None) -> Latent:
        """n latents that depend only on `seed`: drawn on the CPU (the same on every device).

        Classes (and InfoGAN categories) cycle through 0, 1, 2, ...; continuous codes are 0. With
        `columns`, the latents fill a grid row by row: one class per column, and a conditional or
        InfoGAN grid keeps the same noise along each row (content against style)."""
        gen = torch.Generator().manual_seed(seed)
        index = torch.arange(n)
        if columns and (self.conditional or self.categorical):
            rows = torch.randn(-(-n // columns), self.latent_dim, generator=gen)
            out = {"z": rows[index // columns]}
            index = index % columns
        else:
            out = {"z": torch.randn(n, self.latent_dim, generator=gen)}
        if self.conditional:
            out["labels"] = index % self.num_classes
        if self.code_dim:
            out["codes"] = self.codes(index % max(self.categorical, 1), torch.zeros(n, self.continuous))
        return {k: v.to(device) for k, v in out.items()}

    @staticmethod
    def chunk(latent: Latent, start: int, stop: int, device: torch.device | str) -> Latent:
        return {k: v[start:stop].to(device) for k, v in latent.items()}


def apply_generator(model: torch.nn.Module, latent: Latent) -> torch.Tensor:
    """`model`'s images for a latent batch: G (or its EMA copy) takes (z, labels), and InfoGAN's
    G also its codes."""
    if "codes" in latent:
        return model(latent["z"], latent.get("labels"), latent["codes"])
    return model(latent["z"], latent.get("labels"))
