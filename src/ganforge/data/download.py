"""Checksummed downloads of the official dataset files.

A file is streamed to a hidden temporary name beside its final one (`ganforge.io.atomic_writer`), its
MD5 is checked, and only then is it renamed to its final name, so an interrupted or corrupted
download never looks like a usable file and leaves nothing behind.

The base URL of every dataset can be overridden with the environment variable ``GANFORGE_MIRROR``
(a local mirror, or a test server on 127.0.0.1). A ``{name}`` in it is replaced by the dataset's
registry name, so one mirror can hold MNIST and Fashion-MNIST, whose file names are the same.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ganforge.errors import DataError
from ganforge.io import atomic_writer, display_path, first_line

MIRROR_ENV = "GANFORGE_MIRROR"
TIMEOUT_S = 30.0  # per socket operation: long enough for a slow mirror, short enough to fail offline

# Official locations (the ones torchvision uses).
MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    "voc2007": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/",
    "voc2012": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/",
}

# MD5 of each official file, keyed by (dataset, file name). Tests replace entries to serve their own
# files; nothing is ever downloaded without an expected checksum.
CHECKSUMS: dict[tuple[str, str], str] = {
    ("mnist", "train-images-idx3-ubyte.gz"): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ("mnist", "train-labels-idx1-ubyte.gz"): "d53e105ee54ea40749a09fcbcd1e9432",
    ("mnist", "t10k-images-idx3-ubyte.gz"): "9fb629c4189551a2d022fa330f9573f3",
    ("mnist", "t10k-labels-idx1-ubyte.gz"): "ec29112dd5afa0611ce80d1b7f02629c",
    ("fashion-mnist", "train-images-idx3-ubyte.gz"): "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ("fashion-mnist", "train-labels-idx1-ubyte.gz"): "25c81989df183df01b3e8a0aad5dffbe",
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz"): "bef4ecab320f06d8554ea6380940ec79",
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): "bb300cfdad3c16e7a12a480ee83cd310",
    ("cifar10", "cifar-10-python.tar.gz"): "c58f30108f718f92721af3b95e74349a",
    ("cifar100", "cifar-100-python.tar.gz"): "eb9058c3a382ffc7106e4002c42a8d85",
    ("voc2007", "VOCtrainval_06-Nov-2007.tar"): "c52e279531787c972589f7e41ab4ae64",
    ("voc2007", "VOCtest_06-Nov-2007.tar"): "b6e924de25625d8de591ea690078ad9f",
    ("voc2012", "VOCtrainval_11-May-2012.tar"): "6cd6e144f989b92b3379bac3b3de84fd",
}


def mirror_url(dataset: str) -> str:
    """Base URL for `dataset`: $GANFORGE_MIRROR (with {name} substituted) or the official mirror."""
    base = os.environ.get(MIRROR_ENV) or MIRRORS[dataset]
    base = base.replace("{name}", dataset)
    return base if base.endswith("/") else base + "/"


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    dataset: str, filename: str, root: Path, *, quiet: bool = False, needed: Sequence[str] = (),
    offline: str = "mnist5k or digits",
) -> Path:
    """Download `filename` of `dataset` into `root`, verify its MD5 and return its final path.

    `needed` lists every file the caller is missing, so the offline error can say exactly what to
    put where; `offline` names the offline datasets to suggest instead. Raises DataError when the
    mirror is unreachable or the checksum does not match.
    """
    expected = CHECKSUMS[(dataset, filename)]
    url = mirror_url(dataset) + filename
    root.mkdir(parents=True, exist_ok=True)
    # Streamed into a hidden temporary file that becomes `filename` only once its MD5 is right: an
    # interrupted or corrupted download is removed, never left looking like a usable file.
    with atomic_writer(root / filename) as part:
        try:
            _stream(url, part, label=filename, quiet=quiet)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or first_line(exc)
            files = ", ".join(needed or [filename])
            raise DataError(
                f"{dataset}: cannot download {url} ({reason}); put {files} in {display_path(root)} "
                f"yourself, or use the offline datasets {offline}"
            ) from None
        actual = md5_of(part)
        if actual != expected:
            raise DataError(
                f"{dataset}: {filename} from {url} has MD5 {actual}, expected {expected}; the file was "
                f"deleted: retry, or check ${MIRROR_ENV}"
            )
    return root / filename


def _stream(url: str, dest: Path, *, label: str, quiet: bool) -> None:
    """Copy the body of `url` into `dest`, with a progress bar unless quiet."""
    request = urllib.request.Request(url, headers={"User-Agent": "ganforge"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=label,
            disable=quiet,
            file=sys.stderr,
            leave=False,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
