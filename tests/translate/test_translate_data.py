"""Translation data: the folder layouts, bad pairs reported once with their files, the built-ins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.errors import DataError
from ganforge.translate.data import jitter, layout, open_translation_data


def _png(path, size=(20, 12), value=0, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)


def _open(root, split="train", **kw):
    return open_translation_data(str(root), split, load_size=kw.get("size", 16), channels_a=kw.get("ca", 1),
                                 channels_b=kw.get("cb", 3))


def test_two_folders_pair_by_name_and_report_bad_pairs(tmp_path):
    for i in range(12):
        _png(tmp_path / "A" / f"{i:02d}.png", value=10 * i)
        _png(tmp_path / "B" / f"{i:02d}.jpg", value=10 * i, mode="RGB")  # another extension, the same stem
    _png(tmp_path / "A" / "lonely.png")
    _png(tmp_path / "B" / "12.png", size=(30, 30))
    _png(tmp_path / "A" / "12.png")  # sizes differ
    (tmp_path / "A" / "13.png").write_bytes(b"not a png")
    _png(tmp_path / "B" / "13.png")
    assert layout(tmp_path) == "two-folders"
    train = _open(tmp_path)
    test = _open(tmp_path, "test")
    assert train.paired and train.a.shape[1:] == (1, 16, 16) and train.b.shape[1:] == (3, 16, 16)
    assert len(train.a) + len(test.a) == 12  # every tenth pair held out as test
    assert set(train.names_a).isdisjoint(test.names_a)
    why = {f.split("/")[-1]: reason for f, reason in train.issues}
    assert why["lonely.png"] == "no partner in B/"
    assert any("sizes differ" in r for r in why.values()) and any("unreadable" in r for r in why.values())
    assert torch.equal(train.a[0, 0], torch.zeros(16, 16, dtype=torch.uint8))  # pair 00 is black on both sides


def test_side_by_side_with_splits(tmp_path):
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, 10:] = 200  # B, the right half, is bright
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(3):
            Image.fromarray(image).save(tmp_path / split / f"{i}.png")
    assert layout(tmp_path) == "side-by-side"
    train, test = _open(tmp_path, ca=3), _open(tmp_path, "test", ca=3)
    assert len(train.a) == 3 and len(test.a) == 3  # val/ serves as test
    assert int(train.a.max()) == 0 and int(train.b.min()) == 200


def test_unpaired_folder_and_one_empty_side(tmp_path):
    for i in range(4):
        _png(tmp_path / "trainA" / f"a{i}.png", value=50)
    for i in range(6):
        _png(tmp_path / "trainB" / f"b{i}.png", value=150, mode="RGB")
    _png(tmp_path / "testA" / "t.png")
    _png(tmp_path / "testB" / "t.png")
    data = _open(tmp_path)
    assert not data.paired and len(data.a) == 4 and len(data.b) == 6
    assert len(_open(tmp_path, "test").a) == 1
    empty = tmp_path / "empty"
    _png(empty / "trainA" / "a.png")
    (empty / "trainB").mkdir(parents=True)
    with pytest.raises(DataError, match=r"trainB has no readable images") as err:
        _open(empty)
    assert "\n" not in str(err.value)


def test_a_folder_without_pairs_is_one_line(tmp_path):
    _png(tmp_path / "A" / "x.png")
    _png(tmp_path / "B" / "y.png")
    with pytest.raises(DataError, match="no usable image pair .*no partner") as err:
        _open(tmp_path)
    assert "\n" not in str(err.value)


def test_jitter_crops_and_flips_both_sides_alike():
    a = torch.arange(36, dtype=torch.uint8).view(1, 6, 6)
    for seed in range(20):
        x, y = jitter([a, a.clone() + 100], 4, torch.Generator().manual_seed(seed), flip=True)
        assert x.shape == (1, 4, 4) and torch.equal(y, x + 100)


def test_builtins_are_paired_or_unpaired_with_labels():
    from ganforge.translate.builtins import stroke_width

    edges = open_translation_data("edges2mnist", "test", load_size=32, channels_a=1, channels_b=1)
    assert edges.paired and edges.a.shape == edges.b.shape == (1000, 1, 32, 32)
    assert torch.equal(edges.labels_a, edges.labels_b)
    thick = open_translation_data("thin2thick", "test", load_size=32, channels_a=1, channels_b=1)
    widths_a, widths_b = stroke_width(thick.a[:50]), stroke_width(thick.b[:50])
    assert float(widths_b.mean()) > float(widths_a.mean()) + 1  # a known thickening
    unpaired = open_translation_data("thin2thick-unpaired", "train", load_size=32, channels_a=1, channels_b=3)
    assert not unpaired.paired and unpaired.b.shape[1] == 3
    digits = open_translation_data("digits2mnist", "train", load_size=32, channels_a=1, channels_b=1)
    assert not digits.paired and digits.labels_a is not None


def test_horse2zebra_toy_is_unpaired_colour_with_disjoint_splits():
    train = open_translation_data("horse2zebra-toy", "train", load_size=32, channels_a=3, channels_b=3)
    test = open_translation_data("horse2zebra-toy", "test", load_size=32, channels_a=3, channels_b=3)
    assert not train.paired and train.a.shape == (800, 3, 32, 32) and test.b.shape == (200, 3, 32, 32)
    assert not torch.equal(train.a[:200], test.a)
    # zebras hold near-black and near-white pixels, horses none
    assert int((train.b < 40).all(1).sum()) > 0 and int((train.a < 40).all(1).sum()) == 0
