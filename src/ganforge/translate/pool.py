"""The image pool of Shrivastava et al. 2017, as CycleGAN uses it: D sees a mix of the newest fake
and fakes made by older generators, which damps oscillation.

`query` follows the authors' code: until the pool is full every fake goes in and comes back out;
then each fake, with probability 1/2, is swapped for a random stored one (which comes back and the
new fake stays), else comes back itself. The random draws come from a generator the caller seeds
from (seed, step), and the stored images go into checkpoints, so a resumed run draws the same.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, fakes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """B fakes (detached) -> B images for D: new ones or stored ones."""
        if self.size == 0:
            return fakes
        out = []
        for image in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if float(torch.rand((), generator=generator)) > 0.5:
                k = int(torch.randint(self.size, (), generator=generator))
                out.append(self.images[k])
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self, name: str) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"pool.{name}": torch.stack(self.images)} if self.images else {}
        return tensors, {"size": self.size, "count": len(self.images)}

    def load(self, name: str, tensors: dict[str, torch.Tensor], meta: dict, device: torch.device) -> None:
        stored = tensors.get(f"pool.{name}")
        self.images = [] if stored is None else [t.to(device) for t in stored[: meta["count"]]]
