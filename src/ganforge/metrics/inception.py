"""The standard FID Inception-v3 as a feature extractor, from a local weights file only.

torch-fidelity (and torchmetrics, which wraps it) download the weights from GitHub when they are not
given a path. ganforge never lets that happen: it resolves a local file first and always hands that
path over, so the download branch is unreachable. Without the file, the one-line error says where to
put it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from pathlib import Path

import torch

from ganforge.errors import GanforgeError

# torch-fidelity's name for the file (what torchmetrics' download leaves in the torch hub cache), then
# pytorch-fid's name for the same 2015-12-05 TensorFlow graph converted to PyTorch.
WEIGHTS_FILENAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
WEIGHTS_ENV = "GANFORGE_INCEPTION_WEIGHTS"
INCEPTION_ID = "inception-v3-fid"


def hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchmetrics/torch-fidelity) caches downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The weights file: `path`, else $GANFORGE_INCEPTION_WEIGHTS, else the torch hub cache; None if absent.

    An explicit path or environment variable that names a missing file is an error rather than a
    silent fall-through, so a typo never quietly switches which weights are used.
    """
    for given, origin in (
        (path, "the Inception weights path"),
        (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}"),
    ):
        if given:
            candidate = Path(given).expanduser()
            if not candidate.is_file():
                raise GanforgeError(f"{origin} {candidate} is not a file: point it at {WEIGHTS_FILENAMES[0]}")
            return candidate
    for name in WEIGHTS_FILENAMES:
        candidate = hub_checkpoint_dir() / name
        if candidate.is_file():
            return candidate
    return None


def missing_weights_hint() -> str:
    """The part of an error message that says how to make Inception features available."""
    return (
        f"put {WEIGHTS_FILENAMES[0]} (torch-fidelity release v0.2.0) in {hub_checkpoint_dir()}, "
        f"or set {WEIGHTS_ENV} to its path"
    )


def require_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Like find_inception_weights, but absence is a one-line GanforgeError."""
    found = find_inception_weights(path)
    if found is None:
        raise GanforgeError(
            f"the Inception-v3 FID weights are not on this machine (ganforge never downloads them): "
            f"{missing_weights_hint()}; or use --features classifier with a labelled dataset"
        )
    return found


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a replaced file is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-D) and its 1008 unbiased logits, for FID/KID/PR and IS."""

    id = INCEPTION_ID
    test_accuracy = None  # no held-out accuracy is defined for ImageNet weights on the user's data
    channels = 3
    image_size = 299

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        weights = require_inception_weights(path)
        stat = weights.stat()
        self.hash = _file_sha256(str(weights), stat.st_size, stat.st_mtime_ns)
        self.path = weights
        try:
            # weights_only=True refuses pickled code: the file must be plain tensors before
            # torch-fidelity loads it again with its own (unrestricted) torch.load.
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "fc.weight" not in state:
                raise ValueError("not an Inception-v3 state dict")
            self.module = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(weights),
            ).eval()
        except (RuntimeError, ValueError, OSError, EOFError, KeyError, pickle.UnpicklingError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GanforgeError(
                f"{weights} is not the Inception-v3 FID weights file ({first_line[:120]}): "
                f"replace it with {WEIGHTS_FILENAMES[0]}"
            ) from exc

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N x C x H x W (C = 1 or 3, any size) -> (N x 2048 features, N x 1008 logits), float64."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise GanforgeError(
                "Inception features need uint8 N x 1|3 x H x W images, "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        feats, logits = [], []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grayscale as equal RGB channels
            pool, logit = self.module(x.contiguous())  # resizes to 299 the TF1 way internally
            feats.append(pool.double())
            logits.append(logit.double())
        return torch.cat(feats), torch.cat(logits)
