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


def _hsv_reference(rgb: np.ndarray, saturation: float, exposure: float) -> np.ndarray:
    import colorsys

    out = np.empty_like(rgb)
    for i, (r, g, b) in enumerate(rgb):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out[i] = colorsys.hsv_to_rgb(h, min(s * saturation, 1.0), min(v * exposure, 1.0))
    return out


@pytest.mark.parametrize("saturation,exposure", [(1.4, 0.7), (0.6, 1.3), (1.5, 1.5), (1 / 1.5, 1 / 1.5)])
def test_color_augmentation_scales_s_and_v_in_hsv_like_colorsys(saturation, exposure):
    from ganforge.detect.augment import scale_hsv

    gen = torch.Generator().manual_seed(3)
    pixels = torch.rand(3, 1, 400, generator=gen, dtype=torch.float64)
    pixels[:, 0, :5] = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0],
                                     [0.9, 0.8, 0.0]], dtype=torch.float64).T  # black, greys, pure, bright
    got = scale_hsv(pixels, saturation, exposure)[:, 0].T.numpy()
    want = _hsv_reference(pixels[:, 0].T.numpy(), saturation, exposure)
    np.testing.assert_allclose(got, want, atol=1e-9)
    u8 = (pixels * 255).round().to(torch.uint8)
    got8 = scale_hsv(u8, saturation, exposure)[:, 0].T.numpy().astype(float)
    want8 = _hsv_reference(u8[:, 0].T.numpy() / 255.0, saturation, exposure) * 255
    assert np.abs(got8 - want8).max() <= 0.5 + 1e-9  # rounding only


def test_color_augmentation_draws_darknet_factors_and_leaves_boxes():
    from ganforge.detect.augment import RandomHSV

    torch.manual_seed(0)
    hsv = RandomHSV()
    draws = [hsv.make_params([]) for _ in range(2000)]
    for key in ("saturation", "exposure"):
        values = np.array([d[key] for d in draws])
        assert values.min() >= 1 / 1.5 - 1e-12 and values.max() <= 1.5 + 1e-12
        assert 0.45 < (values < 1).mean() < 0.55  # scaled up or down with probability 1/2
        assert values.max() > 1.45 and values.min() < 1 / 1.45  # the whole range is used
    image, target = _sample()
    transform = detection_transform(64, train=True, color="hsv")
    assert any(isinstance(t, RandomHSV) for t in transform.transforms)
    assert not any(isinstance(t, v2.ColorJitter) for t in transform.transforms)
    torch.manual_seed(1)
    colored = RandomHSV()(*wrap(image, target))
    assert torch.equal(colored[1]["boxes"], wrap(image, target)[1]["boxes"])
    assert colored[0].dtype == torch.uint8 and colored[0].shape == image.shape


def test_color_choice_in_config_recipes_and_old_runs():
    from ganforge.detect.config import DetectConfig
    from ganforge.detect.recipes import get_recipe

    assert DetectConfig(epochs=1).color == "hsv"
    assert get_recipe("paper").color == "hsv"
    assert get_recipe("adam").color == "jitter"  # what its learning check measured
    saved = DetectConfig(epochs=1).to_dict()
    assert DetectConfig.from_dict(saved).color == "hsv"
    del saved["color"]  # a run folder written before the key existed trained with ColorJitter
    assert DetectConfig.from_dict(saved).color == "jitter"
    assert any(isinstance(t, v2.ColorJitter) for t in detection_transform(64, train=True, color="jitter").transforms)
    with pytest.raises(ConfigError, match="color"):
        DetectConfig.from_dict({**saved, "color": "rgb"})
