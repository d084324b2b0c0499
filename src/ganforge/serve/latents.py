"""Seeds to latent vectors, written once here and once in the page's JavaScript (page.js), the same way.

The served page draws a generator's noise from a seed in the browser, and a test (or a person) must
be able to make the same vector in Python. torch's generator cannot run in a browser, so the page
uses a generator small enough to write twice exactly:

- mulberry32, a 32-bit integer generator (one state word; every step is an add, shifts, xors and
  32-bit multiplications), gives uniforms u in [0, 1) as ``state_output / 2**32``;
- Box-Muller turns each pair (u1, u2) into two standard normals:
  ``r = sqrt(-2 ln(1 - u1))``, ``r cos(2 pi u2)``, ``r sin(2 pi u2)`` (``1 - u1`` is never 0);
- z holds the first `latent_dim` normals of the seed's stream, computed in float64 and then rounded
  to float32 (what the ONNX model takes).

Between two seeds the page moves along the great circle (slerp, as `ganforge explore` does) at
t in [0, 1]. Integer arithmetic matches bit for bit; the float64 steps (log, cos, sin, acos) may
differ in the last bit between a browser and C's libm, which float32 rounding almost always hides.
"""

from __future__ import annotations

import math

import numpy as np

MASK = 0xFFFFFFFF
MAX_SEED = MASK  # seeds are 32-bit unsigned integers


def _imul(a: int, b: int) -> int:
    """JavaScript's Math.imul on unsigned 32-bit words: the low 32 bits of the product."""
    return (a * b) & MASK


def uniforms(seed: int, n: int) -> list[float]:
    """The first `n` uniforms in [0, 1) of mulberry32 seeded with `seed`."""
    state = seed & MASK
    out = []
    for _ in range(n):
        state = (state + 0x6D2B79F5) & MASK
        t = _imul(state ^ (state >> 15), state | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & MASK
        out.append(((t ^ (t >> 14)) & MASK) / 4294967296.0)
    return out


def normals(seed: int, n: int) -> np.ndarray:
    """The first `n` standard normals (float64) of `seed`'s stream, by Box-Muller on pairs."""
    u = uniforms(seed, 2 * ((n + 1) // 2))
    out = []
    for u1, u2 in zip(u[0::2], u[1::2]):
        r = math.sqrt(-2.0 * math.log(1.0 - u1))
        out += [r * math.cos(2.0 * math.pi * u2), r * math.sin(2.0 * math.pi * u2)]
    return np.array(out[:n], dtype=np.float64)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of two float64 vectors (linear where they are parallel)."""
    na, nb = a / np.linalg.norm(a), b / np.linalg.norm(b)
    omega = math.acos(min(max(float(np.dot(na, nb)), -1 + 1e-7), 1 - 1e-7))
    so = math.sin(omega)
    if abs(so) < 1e-6:
        return (1 - t) * a + t * b
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / so


def page_noise(latent_dim: int, seed_a: int, seed_b: int | None = None, t: float = 0.0) -> np.ndarray:
    """The page's z (float32, 1 x latent_dim) for seed A, or between seeds A and B at t."""
    z = normals(seed_a, latent_dim)
    if seed_b is not None and t != 0.0:
        z = slerp(z, normals(seed_b, latent_dim), t)
    return z.astype(np.float32)[None]


def page_inputs(layout: dict, seed_a: int, seed_b: int | None = None, t: float = 0.0, *, label: int = 0,
                category: int = 0, continuous: list[float] | None = None) -> dict[str, np.ndarray]:
    """The ONNX inputs the page feeds for one image: z, a conditional run's `labels`, and InfoGAN's
    `codes` (one-hot category, then the continuous values). `layout` is the served run's latent
    layout (`latent_dim`, `num_classes`, `categorical`, `continuous`)."""
    feeds = {"z": page_noise(layout["latent_dim"], seed_a, seed_b, t)}  # the names `ganforge export` gives
    if layout.get("num_classes"):
        feeds["labels"] = np.array([label], dtype=np.int64)
    k, c = layout.get("categorical", 0), layout.get("continuous", 0)
    if k or c:
        codes = np.zeros((1, k + c), dtype=np.float32)
        if k:
            codes[0, category] = 1.0
        if c:
            codes[0, k:] = np.asarray(continuous if continuous is not None else [0.0] * c, dtype=np.float32)
        feeds["codes"] = codes
    return feeds


def to_pixels(images: np.ndarray, pixel_range: str) -> np.ndarray:
    """Model output N x C x H x W -> uint8, as ganforge's `to_uint8` (and the page) convert it."""
    x = (images.astype(np.float32) + 1) * 127.5 if pixel_range == "pm1" else images.astype(np.float32) * 255.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
