"""`ganforge export --direction`: a CycleGAN run's second generator (BtoA) exported and run through
ONNX Runtime gives PyTorch's images; --direction elsewhere is refused in one line, writing nothing."""

from __future__ import annotations

import pytest
import torch

from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.export.read import load_exported
from ganforge.translate.recipes import get_recipe
from ganforge.translate.train import train
from ganforge.translate.use import load_trained, translate_image

TOY = {"ngf": 4, "ndf": 4, "threads": 1, "batch_size": 2, "sample_images": 2, "log_every": 2, "channels_b": 3,
       "lambda_idt": 0.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cyc = train(apply_overrides(get_recipe("cyclegan-small"), TOY), root / "cyc", steps=2, log=lambda *_: None)
    p2p = train(apply_overrides(get_recipe("pix2pix-small"), TOY), root / "p2p", steps=2, log=lambda *_: None)
    return cyc, p2p


def test_export_writes_either_generator_of_a_cyclegan_run(runs, tmp_path, capsys):
    cyc, _ = runs
    for direction, channels in (("AtoB", 1), ("BtoA", 3)):
        out = tmp_path / f"{direction}.onnx"
        assert main(["export", str(cyc), "--out", str(out), "--direction", direction]) == 0
        assert "wrote" in capsys.readouterr().out
        exported, trained = load_exported(out), load_trained(cyc, direction=direction)
        assert exported.meta["direction"] == direction and exported.meta["in_channels"] == channels
        x = torch.randint(0, 256, (channels, 29, 45), dtype=torch.uint8)  # neither side a multiple of 4
        a, b = translate_image(exported, x), translate_image(trained, x)
        assert a.shape == b.shape == (4 - channels, 29, 45)
        assert int((a.int() - b.int()).abs().max()) <= 1  # the same generator; float rounding at most
    default = tmp_path / "default.onnx"
    assert main(["export", str(cyc), "--out", str(default)]) == 0
    assert load_exported(default).meta["direction"] == "AtoB"


def test_direction_is_refused_where_there_is_no_such_generator(runs, gan_run, tmp_path, capsys):
    _, p2p = runs
    for run, message in ((p2p, "pix2pix run"), (gan_run, "translation runs")):
        out = tmp_path / "exports" / "g.onnx"
        assert main(["export", str(run), "--out", str(out), "--direction", "BtoA"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ganforge: error: ") and message in err and err.count("\n") == 1, err
        assert not out.parent.exists()  # nothing written, not even the folder
