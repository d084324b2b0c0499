"""Grid targets, the equation-3 loss (one test per term) and inference, on hand-built tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, nms

from ganforge.detect.boxes import GridTargets, cell_of, decode_targets, encode_targets
from ganforge.detect.infer import postprocess
from ganforge.detect.loss import paired_iou, yolo_loss

S, B, C = 7, 2, 3
SIZE = (140, 140)  # 20 pixels per cell


def _targets(boxes, labels, size=SIZE):
    return encode_targets([{"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.tensor(labels)}], size, S)


def _perfect(box_xyxy, label, cell):
    """An output whose predictor 0 of `cell` is exactly the truth, with confidence 1, class one-hot."""
    out = torch.zeros(1, S, S, 5 * B + C)
    row, col = cell
    x1, y1, x2, y2 = box_xyxy
    cx, cy, w, h = (x1 + x2) / 2 / 140, (y1 + y2) / 2 / 140, (x2 - x1) / 140, (y2 - y1) / 140
    out[0, row, col, :5] = torch.tensor([cx * S - col, cy * S - row, math.sqrt(w), math.sqrt(h), 1.0])
    out[0, row, col, 5 * B + label] = 1.0
    return out


BOX, LABEL, CELL = [45.0, 65.0, 77.0, 105.0], 2, (4, 3)  # centre (61, 85): col 3, row 4


# ---------------------------------------------------------------- targets


def test_encode_puts_a_box_in_the_cell_of_its_centre_and_decodes_back():
    t = _targets([BOX], [LABEL])
    assert t.obj.sum() == 1 and bool(t.obj[0, 4, 3]) and int(t.cls[0, 4, 3]) == LABEL
    assert torch.allclose(t.box[0, 4, 3], torch.tensor([61 / 140, 85 / 140, 32 / 140, 40 / 140]))
    back = decode_targets(t, SIZE)[0]
    assert torch.allclose(back["boxes"], torch.tensor([BOX]), atol=1e-4) and back["labels"].tolist() == [LABEL]


def test_round_trip_of_many_boxes_in_distinct_cells():
    gen = torch.Generator().manual_seed(0)
    cells = torch.randperm(S * S, generator=gen)[:12]
    boxes = []
    for k in sorted(cells.tolist()):  # decode returns cell order (row-major)
        row, col = divmod(k, S)
        cx, cy = (col + torch.rand(1, generator=gen).item()) * 20, (row + torch.rand(1, generator=gen).item()) * 20
        w, h = 5 + 30 * torch.rand(2, generator=gen)
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    labels = [k % C for k in range(12)]
    back = decode_targets(_targets(boxes, labels, SIZE), SIZE)[0]
    assert torch.allclose(back["boxes"], torch.tensor(boxes), atol=1e-4)
    assert back["labels"].tolist() == labels


def test_cell_index_is_clamped_at_the_far_edge():
    assert cell_of(torch.tensor([[1.0, 1.0], [0.0, 0.999], [0.5, 0.142857]]), S).tolist() == [[6, 6], [0, 6], [3, 0]]
    # a box touching the right and bottom edges lands in the last cell
    t = _targets([[120.0, 130.0, 140.0, 140.0]], [1])
    assert bool(t.obj[0, 6, 6])


def test_degenerate_boxes_are_dropped():
    t = _targets([[10, 10, 11, 50], [10, 10, 50, 10], [30, 30, 20, 60], [60, 60, 90, 90]], [0, 0, 0, 1])
    assert t.obj.sum() == 1 and int(t.cls[t.obj]) == 1  # only the 30 x 30 box is left


def test_two_centres_in_one_cell_the_first_keeps_it():
    t = _targets([[41, 41, 59, 59], [42, 44, 56, 56]], [0, 1])  # both centres in cell (2, 2)
    assert t.obj.sum() == 1 and int(t.cls[0, 2, 2]) == 0
    t = _targets([[42, 44, 56, 56], [41, 41, 59, 59]], [1, 0])
    assert int(t.cls[0, 2, 2]) == 1



def test_difficult_boxes_are_not_training_targets():
    boxes = torch.tensor([[10.0, 10, 40, 40], [70, 70, 100, 100]])
    both = encode_targets([{"boxes": boxes, "labels": torch.tensor([0, 1])}], (140, 140), S)
    marked = encode_targets([{"boxes": boxes, "labels": torch.tensor([0, 1]),
                              "difficult": torch.tensor([True, False])}], (140, 140), S)
    assert both.obj.sum() == 2 and marked.obj.sum() == 1 and int(marked.cls[marked.obj]) == 1
    assert not marked.obj[0, 1, 1] and marked.obj[0, 4, 4]  # the centres' cells: (25, 25) and (85, 85)


# ---------------------------------------------------------------- the loss, term by term


def test_a_perfect_prediction_has_zero_loss():
    parts = yolo_loss(_perfect(BOX, LABEL, CELL), _targets([BOX], [LABEL]), B)
    assert float(parts.total) == pytest.approx(0, abs=1e-10)


def test_coord_term_is_lambda_coord_times_squared_error_including_sqrt_sizes():
    out = _perfect(BOX, LABEL, CELL)
    out[0, 4, 3, 0] += 0.1  # x
    out[0, 4, 3, 2] += 0.2  # sqrt w
    parts = yolo_loss(out, _targets([BOX], [LABEL]), B, rescore=False)
    assert float(parts.coord) == pytest.approx(5 * (0.1 ** 2 + 0.2 ** 2), rel=1e-5)
    assert float(parts.obj) == pytest.approx(0, abs=1e-10)  # target 1 = confidence 1


def test_obj_term_targets_the_iou_or_one():
    out = _perfect(BOX, LABEL, CELL)
    out[0, 4, 3, 2] = math.sqrt(16 / 140)  # half the width, same centre: IoU 0.5
    out[0, 4, 3, 4] = 0.0
    targets = _targets([BOX], [LABEL])
    assert float(yolo_loss(out, targets, B).obj) == pytest.approx(0.25, rel=1e-5)
    assert float(yolo_loss(out, targets, B, rescore=False).obj) == pytest.approx(1.0, rel=1e-6)


def test_noobj_term_covers_every_other_predictor_including_in_the_object_cell():
    out = _perfect(BOX, LABEL, CELL)
    out[0, 0, 0, 4] = 0.4  # an empty cell
    out[0, 4, 3, 9] = 0.2  # predictor 1 of the object cell, not responsible
    parts = yolo_loss(out, _targets([BOX], [LABEL]), B)
    assert float(parts.noobj) == pytest.approx(0.5 * (0.16 + 0.04), rel=1e-5)
    assert float(parts.obj) == pytest.approx(0, abs=1e-10)


def test_class_term_only_in_object_cells():
    out = _perfect(BOX, LABEL, CELL)
    out[0, 4, 3, 10:] = torch.tensor([0.5, 0.0, 0.5])  # truth is class 2: (0.5)^2 + (0.5 - 1)^2
    out[0, 1, 1, 10:] = 3.0  # no object here: not counted
    assert float(yolo_loss(out, _targets([BOX], [LABEL]), B).cls) == pytest.approx(0.5, rel=1e-6)


def test_responsible_predictor_is_the_higher_iou_one():
    out = _perfect(BOX, LABEL, CELL)
    out[0, 4, 3, 5:10] = out[0, 4, 3, 0:5]  # predictor 1 = the truth, confidence 1
    out[0, 4, 3, 0] += 0.3  # predictor 0 moved off: lower IoU
    out[0, 4, 3, 4] = 0.6
    parts = yolo_loss(out, _targets([BOX], [LABEL]), B)
    assert float(parts.coord) == pytest.approx(0, abs=1e-9)  # predictor 1 is exact
    assert float(parts.noobj) == pytest.approx(0.5 * 0.36, rel=1e-5)  # predictor 0 is "no object"


def test_without_overlap_the_lowest_rmse_predictor_is_responsible():
    out = torch.zeros(1, S, S, 5 * B + C)
    out[0, 4, 3, 0:4] = torch.tensor([0.9, 0.9, 0.05, 0.05])  # tiny, far from the truth's centre
    out[0, 4, 3, 5:9] = torch.tensor([0.1, 0.1, 0.05, 0.05])  # tiny, farther (in x, y)
    truth_param = torch.tensor([0.05, 0.25, math.sqrt(32 / 140), math.sqrt(40 / 140)])
    parts = yolo_loss(out, _targets([BOX], [LABEL]), B)
    expected = 5 * float((out[0, 4, 3, 5:9] - truth_param).square().sum())
    # the IoU of both is 0, so RMSE in decoded (image) units decides: predictor 1 is nearer
    assert float(parts.coord) == pytest.approx(expected, rel=1e-5)


def test_loss_is_finite_for_negative_or_zero_sizes_and_normalised_by_batch():
    torch.manual_seed(0)
    out = torch.randn(2, S, S, 5 * B + C, requires_grad=True)
    with torch.no_grad():
        out[..., 2:4] = -out[..., 2:4].abs()  # negative sqrt w, sqrt h
        out[0, 4, 3, 2] = 0.0
    targets = encode_targets([{"boxes": torch.tensor([BOX]), "labels": torch.tensor([LABEL])}] * 2, SIZE, S)
    parts = yolo_loss(out, targets, B)
    parts.total.backward()
    assert torch.isfinite(parts.total) and torch.isfinite(out.grad).all()
    one = yolo_loss(out[:1].detach(), GridTargets(targets.obj[:1], targets.box[:1], targets.cls[:1]), B)
    same = yolo_loss(out[:1].detach().repeat(3, 1, 1, 1),
                     GridTargets(*(t[:1].repeat_interleave(3, 0) for t in (targets.obj, targets.box, targets.cls))), B)
    assert float(one.total) == pytest.approx(float(same.total), rel=1e-6)
    logged = parts.items()
    assert logged["loss"] == pytest.approx(sum(logged[f"loss_{k}"] for k in ("coord", "obj", "noobj", "cls")))


def test_paired_iou_equals_the_diagonal_of_torchvision_box_iou():
    gen = torch.Generator().manual_seed(1)
    a = torch.cat([torch.rand(50, 2, generator=gen), torch.rand(50, 2, generator=gen) * 0.5], 1)
    b = torch.cat([torch.rand(50, 2, generator=gen), torch.rand(50, 2, generator=gen) * 0.5], 1)
    from torchvision.ops import box_convert
    ref = box_iou(box_convert(a, "cxcywh", "xyxy"), box_convert(b, "cxcywh", "xyxy")).diagonal()
    assert torch.allclose(paired_iou(a, b), ref, atol=1e-6)


# ---------------------------------------------------------------- inference


def test_postprocess_scores_and_maps_back_to_the_original_pixels():
    out = torch.zeros(1, S, S, 5 * B + C)
    out[0, 4, 3, :5] = torch.tensor([0.5, 0.5, math.sqrt(2 / 7), math.sqrt(1 / 7), 0.8])
    out[0, 4, 3, 10:] = torch.tensor([0.1, 0.0, 0.9])
    det = postprocess(out, [(100, 350)], B, conf=0.05)[0]
    # centre (3.5/7, 4.5/7) of a 350 x 100 image, size (2/7 W, 1/7 H)
    expected = torch.tensor([[175 - 50, 450 / 7 - 100 / 14, 175 + 50, 450 / 7 + 100 / 14]])
    assert det["labels"].tolist() == [2, 0]
    assert det["scores"].tolist() == pytest.approx([0.72, 0.08], rel=1e-5)
    assert torch.allclose(det["boxes"][:1], expected, atol=1e-3)


def test_postprocess_nms_equals_torchvision_per_class():
    torch.manual_seed(3)
    out = torch.rand(2, S, S, 5 * B + C)
    out[..., 2:4] *= 0.6
    got = postprocess(out, [(140, 140), (70, 210)], B, conf=0.2, iou=0.4, max_det=1000)
    coarse = postprocess(out, [(140, 140), (70, 210)], B, conf=0.2, iou=1.0, max_det=1000)  # no suppression
    for image, everything in zip(got, coarse):
        keep = []
        for c in range(C):
            idx = (everything["labels"] == c).nonzero().flatten()
            keep += idx[nms(everything["boxes"][idx], everything["scores"][idx], 0.4)].tolist()
        ref = sorted(zip(everything["scores"][keep].tolist(), everything["labels"][keep].tolist()), reverse=True)
        assert sorted(zip(image["scores"].tolist(), image["labels"].tolist()), reverse=True) == ref
        assert len(image["scores"]) < len(everything["scores"])
