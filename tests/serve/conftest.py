"""Small real runs for the served page, trained once per session: a class-conditional GAN that also
takes InfoGAN codes (class picker and code sliders on one page) and a detector, beside the report
tests' unconditional GAN run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ganforge.cli import main as ganforge_main

INFO_ARGS = ["default", "--steps", "4", "data=digits", "base_filters=8", "batch_size=16", "info_categorical=10",
             "info_continuous=2", "conditional=projection", "num_classes=10", "log_every=2", "sample_every=4", "checkpoint_every=4", "--quiet"]
DETECT_ARGS = ["model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
               "log_every=2", "eval_every=6", "predict_every=6", "checkpoint_every=6", "predict_images=2",
               "device=cpu", "--steps", "6", "--quiet"]


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, _runs, ganforge_cache) -> dict[str, Path]:
    from ganforge.detect.digits import load_digits_det
    from ganforge.detect.write_dataset import write_dataset

    root = tmp_path_factory.mktemp("serve-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(ganforge_cache))
        mp.setenv("GANFORGE_DATA", str(root / "data"))
        data = write_dataset({"train": load_digits_det("train", count=12), "val": load_digits_det("val", count=4),
                              "test": load_digits_det("test", count=2)}, root / "digits-yolo", "yolo")
        assert ganforge_main(["train", *INFO_ARGS, "--out", str(root / "info")]) == 0
        assert ganforge_main(["detect", "train", "adam", "--data", str(data), "--out", str(root / "det"),
                              *DETECT_ARGS]) == 0
    return {"gan": _runs["gan"], "info": root / "info", "det": root / "det"}


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
