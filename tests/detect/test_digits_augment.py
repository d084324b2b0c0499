"""digits-det (deterministic, disjoint splits, tight boxes from the ink) and the augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from ganforge.detect import digits
from ganforge.detect.augment import Augmented, detection_transform, unwrap, wrap
from ganforge.detect.digits import load_digits_det
from ganforge.errors import ConfigError


def test_digits_det_is_deterministic_and_varied():
    a = load_digits_det("test", count=60)
    digits.generate.cache_clear()
    b = load_digits_det("test", count=60)
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(x.boxes, y.boxes) for x, y in zip(a.records, b.records))
    counts = [len(r.labels) for r in a.records]
    assert set(counts) == {0, 1, 2, 3, 4}
    sides = torch.cat([r.boxes[:, 2:] - r.boxes[:, :2] for r in a.records]).max(1).values
    assert sides.min() < 20 and sides.max() > 35  # varied scales
    assert a.names == [str(d) for d in range(10)] and a.flip is False and a.images.shape[1:] == (3, 128, 128)


def test_splits_draw_on_disjoint_source_digits():
    pools = {s: set(digits.digit_pool(s).tolist()) for s in ("train", "val", "test")}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    assert sum(len(p) for p in pools.values()) == 5000
    _, _, used = digits.generate("val", 40)
    assert {s for canvas in used for s in canvas} <= pools["val"]


def test_boxes_are_tight_around_the_ink():
    data = load_digits_det("val", count=30)
    checked = 0
    for i, record in enumerate(data.records):
        gray = data.images[i].float().mean(0)
        lift = gray - gray.median()  # ink is bright on a dark, noisy background
        others = torch.zeros_like(gray, dtype=torch.bool)
        for x1, y1, x2, y2 in record.boxes.long().tolist():
            others[max(y1 - 4, 0):y2 + 4, max(x1 - 4, 0):x2 + 4] = True
        for x1, y1, x2, y2 in record.boxes.long().tolist():
            patch = lift[y1:y2, x1:x2]
            # each edge row and column of the box touches ink (coverage >= 1/4 of a bright colour)
            for edge in (patch[0], patch[-1], patch[:, 0], patch[:, -1]):
                assert edge.max() > 12
            assert patch.max() > 80  # and the box holds the stroke itself
            # 3 pixels outside, away from every other digit, there is no stroke
            ring = torch.zeros_like(others)
            ring[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] = True
            ring[y1:y2, x1:x2] = False
            mine = torch.zeros_like(others)
            for ox1, oy1, ox2, oy2 in record.boxes.long().tolist():
                if [ox1, oy1, ox2, oy2] != [x1, y1, x2, y2]:
                    mine[max(oy1 - 4, 0):oy2 + 4, max(ox1 - 4, 0):ox2 + 4] = True
            ring &= ~mine
            if ring.any():
                assert lift[ring].max() < 80
            checked += 1
    assert checked > 30


def test_unknown_split_is_a_config_error():
    with pytest.raises(ConfigError, match="valid: train, val, test"):
        load_digits_det("trainval")


def _sample():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    image[:, 20:40, 30:70] = 255
    return image, {"boxes": torch.tensor([[30.0, 20.0, 70.0, 40.0]]), "labels": torch.tensor([4]),
                   "difficult": torch.tensor([True])}


def test_eval_transform_resizes_boxes_with_the_image_without_letterbox():
    image, target = unwrap(*detection_transform(50, train=False)(*wrap(*_sample())))
    assert image.shape == (3, 50, 50)
    assert torch.allclose(target["boxes"], torch.tensor([[7.5, 10.0, 17.5, 20.0]]))
    assert target["labels"].tolist() == [4] and target["difficult"].tolist() == [True]


def test_train_transform_moves_boxes_with_the_pixels():
    torch.manual_seed(0)
    transform = detection_transform(100, train=True, flip=True)
    for _ in range(20):
        image, target = unwrap(*transform(*wrap(*_sample())))
        if len(target["boxes"]) == 0:
            continue
        x1, y1, x2, y2 = target["boxes"][0].round().long().tolist()
        lit = image.float().mean(0) > 30
        inside, outside = lit[y1 + 1:y2 - 1, x1 + 1:x2 - 1], lit.clone()
        outside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = False
        assert inside.float().mean() > 0.95 and not outside.any()


def test_flip_is_a_per_dataset_option_off_for_digits():
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in detection_transform(112, train=True).transforms)
    assert any(isinstance(t, v2.RandomHorizontalFlip)
               for t in detection_transform(112, train=True, flip=True).transforms)
    aug = Augmented(load_digits_det("val", count=4), 112, train=True)
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in aug.transform.transforms)


def test_tiny_leftover_boxes_are_dropped_and_boxes_clipped():
    image = torch.zeros(3, 100, 100, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[-5.0, 10.0, 40.0, 60.0], [98.5, 10, 99.5, 11]]), "labels": torch.tensor([1, 2]),
              "difficult": torch.tensor([False, False])}
    _, out = unwrap(*detection_transform(100, train=False)(*wrap(image, target)))
    assert out["boxes"].tolist() == [[0.0, 10.0, 40.0, 60.0]] and out["labels"].tolist() == [1]
    np.testing.assert_array_equal(out["difficult"].numpy(), [False])
