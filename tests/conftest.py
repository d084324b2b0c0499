"""Shared fixtures and helpers: every test gets its own cache and data folders and no proxy or
mirror; files in the official dataset formats; a folder served on 127.0.0.1; and `ganforge` run as
a person runs it, in a subprocess."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores are shared by two pytest workers: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)
# threads=0 stays every core, in session fixtures too: thread counts chosen from the machine's load
# would make runs, and the bit-exact resume tests, depend on what else runs beside the suite.
os.environ["GANFORGE_THREAD_GOVERNOR"] = "off"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("GANFORGE_MIRROR", raising=False)
    # threads=0 stays every core: thread counts chosen from the machine's load would make runs,
    # and the bit-exact resume tests, depend on what else runs beside the suite.
    monkeypatch.setenv("GANFORGE_THREAD_GOVERNOR", "off")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@contextlib.contextmanager
def shared_cache_env(cache: Path) -> Iterator[None]:
    """Point ganforge at `cache` (and torch hub at an empty folder: no stray Inception weights)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(cache))
        mp.setenv("TORCH_HOME", str(cache / "torch"))
        mp.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
        yield


@pytest.fixture(scope="session")
def ganforge_cache(tmp_path_factory) -> Path:
    """One throw-away cache per test session for feature networks, so each net trains once."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by xdist workers
    cache = root / "ganforge-metrics-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture
def shared_metrics_cache(ganforge_cache):
    """Use after the per-test isolation: swaps in the session-wide feature-network cache."""
    with shared_cache_env(ganforge_cache):
        yield


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt, or any call of the weight downloaders, fails the test."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


# ---- real short runs for the report tests, trained once per session on the offline digits ------------

# Report runs: steps 1, 20, 40 and the last (60) get a grid; two in-training evaluations.
GAN_ARGS = ["default", "--steps", "60", "data=digits", "log_every=10", "sample_every=20",
            "eval_every=30", "eval_n=200", "checkpoint_every=30", "base_filters=8", "batch_size=32",
            "--quiet"]
# A time budget stops this one long before its step budget: a real stopped run. Its grids must not
# depend on the machine's speed, so it trains 12 steps (grids 1, 5, 10, 12), then is resumed with a
# budget of 100,000 steps and a time budget that any step exceeds: it stops after step 13, with a grid.
STOPPED_ARGS = ["default", "--steps", "12", "data=digits", "log_every=5", "sample_every=5",
                "g_lr=1e-3", "base_filters=8", "batch_size=32", "--quiet"]
STOPPED_RESUME = ["--steps", "100000", "max_seconds=1e-9", "--quiet"]


def _train(out: Path, args: list[str], resume: list[str] | None = None) -> Path:
    from ganforge.cli import main as ganforge_main

    assert ganforge_main(["train", *args, "--out", str(out)]) == 0
    if resume is not None:
        assert ganforge_main(["train", "--resume", str(out), *resume]) == 0
    return out


@pytest.fixture(scope="session")
def _runs(tmp_path_factory, ganforge_cache) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(ganforge_cache))  # the digits feature net trains once
        mp.setenv("GANFORGE_DATA", str(root / "data"))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        return {"gan": _train(root / "gan", GAN_ARGS),
                "stopped": _train(root / "stopped", STOPPED_ARGS, STOPPED_RESUME)}


@pytest.fixture
def gan_run(_runs, tmp_path) -> Path:
    """A private copy of the finished GAN run (tests write into it)."""
    return Path(shutil.copytree(_runs["gan"], tmp_path / "gan"))


@pytest.fixture
def stopped_run(_runs, tmp_path) -> Path:
    return Path(shutil.copytree(_runs["stopped"], tmp_path / "stopped"))


# ---- files in the official formats, and a mirror on 127.0.0.1 -----------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output clean
        pass


@contextlib.contextmanager
def served_mirror(served: Path, monkeypatch, path: str = "") -> Iterator[Path]:
    """`served` on 127.0.0.1, installed as $GANFORGE_MIRROR (plus `path`, e.g. "{name}/")."""
    served.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("GANFORGE_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/{path}")
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1 and installed as $GANFORGE_MIRROR; yields the folder."""
    with served_mirror(tmp_path / "mirror", monkeypatch) as served:
        yield served


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST files in the official IDX format, with known random contents."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        payload = idx_bytes(array, 0x801 if array.ndim == 1 else 0x803)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return arrays


def cifar_batch(n: int, label_key: str, num_classes: int, seed: int, protocol: int) -> bytes:
    rng = np.random.default_rng(seed)
    entry = {
        "batch_label": f"batch {seed}",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(x) for x in rng.integers(0, num_classes, n)],
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }
    return pickle.dumps(entry, protocol=protocol)


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_cifar10(path: Path, per_batch: int = 3) -> Path:
    members = {
        f"cifar-10-batches-py/data_batch_{i}": cifar_batch(per_batch, "labels", 10, i, 2) for i in range(1, 6)
    }
    members["cifar-10-batches-py/test_batch"] = cifar_batch(per_batch, "labels", 10, 9, 2)
    return write_tar(path, members)


def write_cifar100(path: Path, n_train: int = 7, n_test: int = 4) -> Path:
    return write_tar(
        path,
        {
            "cifar-100-python/train": cifar_batch(n_train, "fine_labels", 100, 1, 5),
            "cifar-100-python/test": cifar_batch(n_test, "fine_labels", 100, 2, 5),
        },
    )


def real_digit_classes(root: Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 60) -> Path:
    """scikit-learn's real 8x8 digits, written as PNGs under one subfolder per class ("zero", ...)."""
    from sklearn.datasets import load_digits

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    digits = load_digits()
    for c in classes:
        picks = np.flatnonzero(digits.target == c)[:per_class]
        for k, i in enumerate(picks):
            pixels = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
            path = root / words[c] / f"{k:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


class RealImages(torch.nn.Module):
    """A stand-in generator that draws real test images, in turn from each class's pool: of the class
    asked for, or of the class `pick(codes)` names from the latent codes (an InfoGAN's)."""

    def __init__(self, test, pick=None) -> None:
        super().__init__()
        self.by_class = {k: test.images[test.labels == k] for k in range(int(test.num_classes))}
        self.used = {k: 0 for k in self.by_class}
        self.pick = pick

    @classmethod
    def by_category(cls, test, perm: list[int]) -> "RealImages":
        """Value v of the categorical code (the first len(perm) code columns) draws class perm[v]."""
        return cls(test, lambda codes: torch.tensor(perm)[codes[:, :len(perm)].argmax(1)])

    def forward(self, z, labels=None, codes=None):
        if self.pick is not None:
            labels = self.pick(codes)
        out = []
        for k in labels.tolist():
            pool = self.by_class[k]
            out.append(pool[self.used[k] % len(pool)])
            self.used[k] += 1
        return torch.stack(out).float() / 127.5 - 1


def write_images(root: Path, count: int, size=(12, 10), mode: str = "RGB", ext: str = ".png") -> list[Path]:
    rng = np.random.default_rng(count)
    written = []
    for i in range(count):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        path = root / f"img_{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        written.append(path)
    return written


# ---- `ganforge` in a subprocess, as a person runs it ----------------------------------------------------

# A one-step run of the smallest recipe that trains on a folder: seconds, not minutes.
TINY_FOLDER_RUN = ["--steps", "1", "base_filters=4", "batch_size=4", "--quiet", "--device", "cpu"]


def ganforge(*args: str | os.PathLike | bytes, env: dict | None = None, timeout: float = 300,
             prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m ganforge ARGS` with this process's environment (its cache folders) plus `env`;
    output as bytes, so names that are not UTF-8 come back exactly. `prefix` runs it under another
    program (`unshare ...`)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    argv = [*(prefix or []), sys.executable, "-m", "ganforge", *map(os.fsencode, args)]
    return subprocess.run(argv, capture_output=True, env=full_env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    err = proc.stderr.decode("utf-8", errors="strict").strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err) == 1 and err[0].startswith("ganforge: error: "), err
    return err[0]


def assert_ok(proc: subprocess.CompletedProcess) -> str:
    """Exit 0 and no traceback; returns stderr as text (strict UTF-8: a message that shows a path
    must show it safely)."""
    err = proc.stderr.decode("utf-8", errors="strict")
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err
    return err


def decode_cache(cache: Path) -> dict[str, torch.Tensor]:
    """The one decoded-folder cache file in `cache`, as its tensors."""
    from safetensors.torch import load_file

    files = sorted((cache / "folders").glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(str(files[0]))


def leftovers(root: Path) -> list[Path]:
    """Temporary files an atomic write would leave behind if it did not clean up."""
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]


# The served page's runs (tests/serve): a class-conditional GAN that also takes InfoGAN codes (class
# picker and code sliders on one page), a detector and a pix2pix translator (grey in, colour out, so the
# page converts channels both ways), beside the report tests' unconditional run.
def _serve_cli(argv: list[str]) -> int:
    from ganforge.cli import main
    return main(argv)


INFO_ARGS = ["default", "--steps", "4", "data=digits", "base_filters=8", "batch_size=16", "info_categorical=10",
             "info_continuous=2", "conditional=projection", "num_classes=10", "log_every=2", "sample_every=4", "checkpoint_every=4", "--quiet"]
DETECT_ARGS = ["model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
               "log_every=2", "eval_every=6", "predict_every=6", "checkpoint_every=6", "predict_images=2",
               "device=cpu", "--steps", "6", "--quiet"]
# lr 0.01 for 30 steps: far enough from the initial flat grey that comparing pictures means something
TRANSLATE_TOY = {"ngf": 4, "ndf": 4, "threads": 1, "batch_size": 2, "sample_images": 2, "log_every": 10,
                 "channels_b": 3, "lr": 0.01}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, _runs, ganforge_cache) -> dict[str, Path]:
    from ganforge.config import apply_overrides
    from ganforge.detect.digits import load_digits_det
    from ganforge.detect.write_dataset import write_dataset
    from ganforge.translate.recipes import get_recipe
    from ganforge.translate.train import train as train_translator

    root = tmp_path_factory.mktemp("serve-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(ganforge_cache))
        mp.setenv("GANFORGE_DATA", str(root / "data"))
        data = write_dataset({"train": load_digits_det("train", count=12), "val": load_digits_det("val", count=4),
                              "test": load_digits_det("test", count=2)}, root / "digits-yolo", "yolo")
        assert _serve_cli(["train", *INFO_ARGS, "--out", str(root / "info")]) == 0
        assert _serve_cli(["detect", "train", "adam", "--data", str(data), "--out", str(root / "det"),
                              *DETECT_ARGS]) == 0
        # the page needs only the checkpoint: no report or GIF at the end (a quicker fixture)
        mp.setattr("ganforge.translate.train._final_outputs", lambda run, log: None)
        train_translator(apply_overrides(get_recipe("pix2pix-small"), TRANSLATE_TOY), root / "p2p", steps=30,
                         log=lambda *_: None)
        # a CycleGAN run: two generators, grey A <-> colour B (no identity term across channel counts;
        # at lr 0.01 its B-to-A generator ends at flat black, at 0.002 it draws)
        train_translator(apply_overrides(get_recipe("cyclegan-small"), {**TRANSLATE_TOY, "lr": 0.002,
                                                                          "lambda_idt": 0.0}),
                         root / "cyc", steps=30, log=lambda *_: None)
    return {"gan": _runs["gan"], "info": root / "info", "det": root / "det", "p2p": root / "p2p",
            "cyc": root / "cyc"}


@pytest.fixture
def serving():
    """A function: `with serving(RUN, ...) as server:` runs `ganforge serve` on a free port."""
    return _serving


@contextlib.contextmanager
def _serving(*runs: Path):
    """`ganforge serve` on 127.0.0.1 (a free port) in this process; yields the server."""
    from ganforge.serve import make_server

    server = make_server(list(runs), port=0, log=lambda *a: None)
    server.start_background()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
