"""Conditional and InfoGAN runs end to end: exact resume, labels from a streamed class folder,
`sample --label`, `explore`, the latent measurements of `ganforge eval`, and bad input as one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from conftest import RealImages, real_digit_classes
from test_train import _final_state

from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.gan.latent_metrics import category_agreement, class_fidelity, slant, stroke_width
from ganforge.gan.latents import LatentSpec
from ganforge.gan.recipes import get_recipe
from ganforge.gan.train import train

TOY = {
    "cgan-mnist": ["data=digits", "base_filters=4", "batch_size=8"],
    "infogan-mnist": ["data=digits", "batch_size=8"],
    "infogan-inv": ["data=digits", "batch_size=8", "diffaugment=translation", "info_invariance=rotation,thickness"],
    "infogan-axes": ["data=digits", "batch_size=8", "info_invariance=rotation,thickness", "info_axes=slant,width",
                     "info_learned_std=true"],
    "cgan-acgan": ["data=digits", "base_filters=4", "batch_size=8", "conditional=acgan", "r1_gamma=1",
                   "gp_lambda=1", "spectral_norm=true", "loss=wgan",
                   "diffaugment=color,translation,cutout"],
}


def _config(name: str, *extra: str):
    recipe = "infogan-mnist" if name.startswith("infogan") else "cgan-mnist"
    return apply_overrides(get_recipe(recipe), TOY[name] + ["checkpoint_every=1", "log_every=2", "device=cpu",
                                                            *extra])


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ganforge: error: "), (code, err)
    return lines[0]


@pytest.mark.parametrize("name", list(TOY))
def test_conditional_and_infogan_runs_resume_exactly(name, tmp_path):
    cfg = _config(name)
    full = train(cfg, tmp_path / "full", steps=4, quiet=True)
    half = train(cfg, tmp_path / "half", steps=2, quiet=True)
    resumed = train(None, half, resume=True, steps=4, quiet=True)
    (a, meta_a), (b, meta_b) = _final_state(full), _final_state(resumed)
    assert meta_a["step"] == meta_b["step"] == 4 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert meta_a["config"]["num_classes"] == 10 or name.startswith("infogan")
    if name.startswith("infogan"):
        assert "Q" in meta_a["modules"] and "Q" in meta_a["lr"] and "fixed_codes" in a
        rows = [json.loads(r) for r in (full / "metrics.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["q_info_cat"]) and r["g_info"] > 0 for r in rows if "g_loss" in r)
        inv = [k in r for r in rows if "g_loss" in r for k in ("g_info_inv", "q_info_inv")]
        assert inv and all(inv) == (name in ("infogan-inv", "infogan-axes")) and any(inv) == all(inv)
    else:
        assert torch.equal(a["fixed_labels"].view(10, 10), torch.arange(10).repeat(10, 1))


def test_a_streamed_class_folder_brings_its_labels_like_the_in_memory_one(tmp_path):
    digits = real_digit_classes(tmp_path / "digits", classes=(0, 1, 7), per_class=12)
    base = apply_overrides(get_recipe("cgan-mnist"), [f"data={digits}", "base_filters=4", "batch_size=8",
                                                      "checkpoint_every=1", "grid_rows=3"])
    memory = train(apply_overrides(base, ["data_mode=memory"]), tmp_path / "memory", steps=3, quiet=True)
    streamed = train(apply_overrides(base, ["data_mode=stream", "workers=1"]), tmp_path / "stream", steps=3,
                     quiet=True)
    (a, meta), (b, _) = _final_state(memory), _final_state(streamed)
    assert meta["config"]["num_classes"] == 3 and meta["class_names"] == ["one", "seven", "zero"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sample_labels_and_explore_write_what_they_promise(tmp_path, capsys):
    run = train(_config("infogan-mnist", "conditional=projection"), tmp_path / "run", steps=2, quiet=True)
    code, _, err = _cli(["sample", run, "--labels", "3,4", "--n", "6", "--out", tmp_path / "s"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".ganforge-output", "0.png", "1.png", "2.png",
                                                                 "3.png", "4.png", "5.png", "grid.png"]
    code, out, err = _cli(["explore", run, "--frames", "3", "--n", "2", "--seed", "5"], capsys)
    assert code == 0, err
    explore = run / "explore"
    names = ["interpolation", "traversal", "classes", "code-cat", "code-c1", "code-c2"]
    for name in names:
        assert (explore / f"{name}.gif").is_file() and (explore / f"{name}.png").is_file(), name
    frames = {name: sorted(p.name for p in (explore / name).iterdir()) for name in names}
    assert frames["interpolation"] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert len(frames["classes"]) == 10 and len(frames["code-cat"]) == 10 and len(frames["code-c2"]) == 3
    still = np.asarray(Image.open(explore / "traversal.png"))
    # 4 dims x 2 samples rows, 3 frames columns, under a 16-pixel row of values and right of the
    # column of dimension labels
    grid = still[16:, -(2 + 3 * 30):]
    assert grid.shape[:2] == (2 + 4 * 2 * 30, 2 + 3 * 30) and still.shape[0] == 16 + 2 + 4 * 2 * 30
    first = (explore / "code-c1.png").read_bytes()
    _cli(["explore", run, "--frames", "3", "--n", "2", "--seed", "5", "--lerp"], capsys)
    assert (explore / "code-c1.png").read_bytes() == first  # the same seed draws the same pictures


def test_bad_latent_input_is_one_line(tmp_path, capsys):
    plain = train(apply_overrides(get_recipe("default"), ["data=digits", "base_filters=4", "batch_size=8"]),
                  tmp_path / "plain", steps=1, quiet=True)
    cond = train(_config("cgan-mnist"), tmp_path / "cond", steps=1, quiet=True)
    cases = [
        (["sample", plain, "--label", "3", "--out", tmp_path / "o"], "is not a conditional run"),
        (["sample", cond, "--label", "10", "--out", tmp_path / "o"], "label 10 is out of range: this run has 10"),
        (["sample", cond, "--labels", "1,x", "--out", tmp_path / "o"], "bad value --labels '1,x'"),
        (["explore", plain, "--dims", "3,100"], "--dims 100 is beyond the latent size: this run's z has 100"),
        (["explore", plain, "--codes", "c1"], "this run has no codes"),
    ]
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    cases.append((["train", "cgan-mnist", "--data", folder, "--out", tmp_path / "never", "--steps", "1",
                   "batch_size=2", "--quiet"],
                  "is a conditional recipe (conditional=projection) but"))
    for argv, needle in cases:
        code, _, err = _cli(argv, capsys)
        assert needle in _one_line(code, err), (argv, err)
    assert not (tmp_path / "never").exists() and not (tmp_path / "o").exists()


# ---- the measurements, on real test images -----------------------------------------------------------

@pytest.mark.usefixtures("shared_metrics_cache")
def test_class_fidelity_and_code_agreement_of_real_images_match_the_classifier():
    from ganforge.data import load_dataset
    from ganforge.metrics.feature_nets import get_feature_net

    net, test = get_feature_net("digits", quiet=True), load_dataset("digits", split="test", quiet=True)
    counts = torch.bincount(test.labels).tolist()
    spec = LatentSpec(4, num_classes=10)
    fid = class_fidelity(RealImages(test), spec, net, test, n_per_class=min(counts), seed=0)
    assert abs(fid["mean"] - net.test_accuracy) < 0.03 and fid["mean"] > 0.85
    assert fid["ceiling_mean"] is not None and abs(fid["mean"] - fid["ceiling_mean"]) < 0.03
    perm = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    agree = category_agreement(RealImages.by_category(test, perm), LatentSpec(4, categorical=10, continuous=2),
                               net, n=min(counts) * 10, seed=0)
    assert abs(agree["agreement"] - net.test_accuracy) < 0.03
    assert agree["matching"] == {str(c): k for c, k in enumerate(perm)}


def _bar(angle: float, width: int, size: int = 28) -> np.ndarray:
    """A white stroke of `width` pixels through the centre, `angle` degrees from the vertical."""
    img = Image.new("L", (size * 4, size * 4))
    c, half = size * 2, size * 1.4
    dx, dy = half * math.sin(math.radians(angle)), half * math.cos(math.radians(angle))
    ImageDraw.Draw(img).line([(c - dx, c + dy), (c + dx, c - dy)], fill=255, width=width * 4)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def test_slant_and_stroke_width_of_known_strokes():
    angles = [-30, -15, 0, 15, 30]
    bars = torch.from_numpy(np.stack([_bar(a, 2) for a in angles]))[:, None]
    measured = slant(bars)
    # Top leaning right is a negative angle in image coordinates (y grows downwards).
    assert np.allclose(-measured, angles, atol=1.5), measured
    widths = torch.from_numpy(np.stack([_bar(10, w) for w in (1, 2, 3, 4)]))[:, None]
    got = stroke_width(widths)
    assert np.all(np.diff(got) > 0.5) and np.allclose(got, [1, 2, 3, 4], atol=0.6), got
