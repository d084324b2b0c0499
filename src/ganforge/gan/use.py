"""A GAN run as a `Trained`: its generator (EMA weights when the run kept them) behind one
positional signature, the latent batch as its input and uint8 images as its output.

The generator's inputs are named tensors, in this order, each present only when the run has it:
`z` (N x latent_dim, N(0, I)), `labels` (N, int64 class numbers) and `codes` (N x (categorical +
continuous): InfoGAN's one-hot category then its continuous values in [-1, 1]).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from ganforge.data.pixels import to_uint8
from ganforge.gan.config import GANConfig
from ganforge.gan.latents import Latent, LatentSpec
from ganforge.gan.sampling import load_generator
from ganforge.trained import Trained


def input_names(spec: LatentSpec) -> tuple[str, ...]:
    return ("z",) + (("labels",) if spec.conditional else ()) + (("codes",) if spec.code_dim else ())


class GeneratorInputs(nn.Module):
    """G with its latent parts as positional inputs, so an exported graph names each of them."""

    def __init__(self, generator: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.generator, self.names = generator, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.names, inputs))
        if "codes" in given:
            return self.generator(given["z"], given.get("labels"), given["codes"])
        return self.generator(given["z"], given.get("labels"))


def latent_meta(spec: LatentSpec) -> dict:
    codes = ([{"name": "category", "kind": "categorical", "size": spec.categorical}] if spec.categorical else []) + \
        [{"name": f"c{i + 1}", "kind": "continuous", "range": [-1, 1]} for i in range(spec.continuous)]
    return {"noise": spec.latent_dim, "noise_distribution": "normal(0, 1)", "classes": spec.num_classes,
            "categorical": spec.categorical, "continuous": spec.continuous, "codes": codes,
            "inputs": list(input_names(spec))}


def generator_meta(cfg: GANConfig, step: int, ema: bool) -> dict:
    """What a file needs to be used without ganforge's run folder (docs/EXPORT.md)."""
    spec = LatentSpec.from_config(cfg)
    return {"task": "gan", "model": cfg.model, "config": cfg.to_dict(), "step": step, "ema": ema,
            "channels": cfg.channels, "image_size": cfg.image_size, "pixel_range": cfg.pixel_range,
            "normalization": "images = (output + 1) * 127.5" if cfg.pixel_range == "pm1" else "images = output * 255",
            "class_names": [str(c) for c in range(spec.num_classes)], "latent": latent_meta(spec),
            "input_names": list(input_names(spec)), "output_name": "images",
            "postprocess": {"round": True, "clip": [0, 255]}}


def _trained(module: nn.Module, cfg: GANConfig, meta: dict, source: Path | None, runtime: str) -> Trained:
    spec = LatentSpec.from_config(cfg)
    names = input_names(spec)

    def pre(latent: Latent) -> tuple[torch.Tensor, ...]:
        return tuple(latent[name] for name in names)

    def post(raw: torch.Tensor) -> torch.Tensor:
        return to_uint8(raw, cfg.pixel_range)

    return Trained("gan", module, cfg, pre(spec.fixed(1, 0)), pre, post, meta, source, runtime)


def load_trained(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu") -> Trained:
    """The generator of a GAN run (EMA weights when kept) as a `Trained`: `preprocess(latent)` ->
    its inputs, `postprocess(output)` -> uint8 N x C x H x W."""
    generator, cfg, meta = load_generator(run_dir, checkpoint, device=device)  # says which checkpoint it fell back to
    return from_generator(generator, cfg, step=int(meta.get("step", 0)), ema="G_ema" in meta.get("modules", []),
                          source=Path(run_dir))


def from_generator(generator: nn.Module, cfg: GANConfig, *, step: int = 0, ema: bool = False,
                   source: Path | None = None) -> Trained:
    """A generator in memory (eval mode) as a `Trained`."""
    module = GeneratorInputs(generator.eval(), input_names(LatentSpec.from_config(cfg))).eval()
    return _trained(module, cfg, generator_meta(cfg, step, ema), source, "pytorch")


def wrap_exported(module, meta: dict, runtime: str, source: Path) -> Trained:
    """An exported generator with the same latent layout and pixel conversion as its run."""
    return _trained(module, GANConfig.from_dict(meta["config"]), meta, source, runtime)


@torch.no_grad()
def images(model: Trained, latent: Latent, *, batch_size: int = 500, progress: bool = False) -> torch.Tensor:
    """`model`'s uint8 images for a latent batch, in chunks of `batch_size`."""
    from tqdm import tqdm

    n = latent["z"].shape[0]
    starts = tqdm(range(0, n, batch_size), desc="generating", unit="batch", leave=False,
                  disable=not (progress and sys.stderr.isatty()))
    return torch.cat([model.postprocess(model(*model.preprocess(LatentSpec.chunk(latent, i, i + batch_size,
                                                                                 model.device))))
                      for i in starts])
