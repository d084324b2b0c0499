"""VOC AP: hand-made edge cases with their worked values, and agreement with torchmetrics' COCO AP50."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganforge.detect.voc_eval import _iou_plus_one, average_precision, evaluate
from ganforge.errors import ConfigError


def _truth(boxes, labels, difficult=None):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "difficult": torch.tensor(difficult if difficult is not None else [False] * len(labels))}


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


A, B_ = [10, 10, 50, 50], [100, 100, 160, 150]


def test_no_detections_give_zero_ap_for_every_class_with_truth():
    for metric in ("voc07", "voc12", "coco50"):
        r = evaluate([_pred([], [], [])], [_truth([A, B_], [0, 1])], 2, metric=metric)
        assert r.ap == {0: 0.0, 1: 0.0} and r.map == 0.0


def test_perfect_detections_give_one():
    r = evaluate([_pred([A, B_], [0.9, 0.8], [0, 1])], [_truth([A, B_], [0, 1])], 2)
    assert r.map == 1.0 and r.label == "VOC07 11-point mAP@0.5"


def test_a_duplicate_is_a_false_positive_with_the_worked_values():
    truth = [_truth([A, B_], [0, 0])]
    pred = [_pred([A, [11, 10, 50, 51], B_], [0.9, 0.8, 0.7], [0, 0, 0])]
    # recall .5 .5 1, precision 1 .5 2/3
    assert evaluate(pred, truth, 1, metric="voc12").map == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert evaluate(pred, truth, 1, metric="voc07").map == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert evaluate(pred, truth, 1, metric="coco50").map == pytest.approx((51 + 50 * 2 / 3) / 101)
    without = [_pred([A, B_], [0.9, 0.7], [0, 0])]
    assert evaluate(without, truth, 1, metric="voc12").map == 1.0


def test_difficult_objects_are_neither_positive_nor_false_positive():
    truth = [_truth([A, B_], [0, 0], [True, False])]
    pred = [_pred([A, B_], [0.9, 0.8], [0, 0])]  # the better score is on the difficult one
    r = evaluate(pred, truth, 1, metric="voc12")
    assert r.map == 1.0 and r.n_truth == {0: 1}
    as_plain = evaluate(pred, [_truth([B_], [0])], 1, metric="voc12")
    assert as_plain.map == pytest.approx(0.5)  # had the difficult box not been there: an FP first


def test_a_class_with_only_difficult_truth_is_left_out_of_the_mean():
    truth = [_truth([A, B_], [0, 1], [False, True])]
    pred = [_pred([A, B_], [0.9, 0.8], [0, 1])]
    r = evaluate(pred, truth, 2)
    assert r.ap == {0: 1.0, 1: None} and r.map == 1.0


def test_a_class_with_no_truth_is_excluded_from_the_mean():
    truth = [_truth([A], [0]), _truth([B_], [1])]
    pred = [_pred([A, B_], [0.9, 0.95], [0, 2]), _pred([[100, 100, 125, 150], B_], [0.6, 0.5], [1, 1])]
    r = evaluate(pred, truth, 3, metric="voc12")
    assert r.ap[2] is None and r.n_detections[2] == 1
    assert r.ap[1] == pytest.approx(0.5)  # an FP (IoU 26 / 61) then the TP
    assert r.map == pytest.approx((1.0 + 0.5) / 2)
    assert r.to_json(["a", "b", "c"])["ap"] == {"a": 1.0, "b": pytest.approx(0.5), "c": None}


def test_no_truth_at_all_gives_no_map():
    assert evaluate([_pred([A], [0.5], [0])], [_truth([], [])], 2).map is None


def test_ties_keep_the_input_order():
    truth = [_truth([A], [0])]
    fp_first = [_pred([B_, A], [0.5, 0.5], [0, 0])]
    tp_first = [_pred([A, B_], [0.5, 0.5], [0, 0])]
    assert evaluate(fp_first, truth, 1, metric="voc12").map == pytest.approx(0.5)
    assert evaluate(tp_first, truth, 1, metric="voc12").map == 1.0


def test_plus_one_pixel_areas():
    gt, det = torch.tensor([[0.0, 0, 9, 9]]), torch.tensor([[0.0, 0, 9, 4]])
    assert float(_iou_plus_one(det, gt, True)) == pytest.approx(50 / 100)
    assert float(_iou_plus_one(det, gt, False)) == pytest.approx(36 / 81)
    truth, pred = [_truth([[0, 0, 3, 3]], [0])], [_pred([[1, 0, 3, 3]], [0.9], [0])]
    assert evaluate(pred, truth, 1, iou=0.7, plus_one=True).map == 1.0  # inclusive corners: 12 / 16 pixels
    assert evaluate(pred, truth, 1, iou=0.7).map == 0.0  # continuous (the default): 6 / 9
    assert evaluate(pred, truth, 1, iou=0.7, metric="coco50").map == 0.0  # COCO: no +1


def _devkit_iou(det: list[float], gt: list[float]) -> float:
    """py-faster-rcnn voc_eval's overlap, on inclusive 1-based pixel corners."""
    iw = max(min(det[2], gt[2]) - max(det[0], gt[0]) + 1.0, 0.0)
    ih = max(min(det[3], gt[3]) - max(det[1], gt[1]) + 1.0, 0.0)
    inter = iw * ih
    area = lambda b: (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)  # noqa: E731
    return inter / (area(det) + area(gt) - inter)


def test_continuous_boxes_score_as_the_devkit_scores_their_xml(tmp_path):
    """A thin VOC truth box, read from XML by the project's loader (continuous corners), against
    detections in continuous pixels: the match is the devkit's on the same boxes written back as
    inclusive corners (xmin = x1 + 1, xmax = x2). Adding the pixel again would match a detection
    whose devkit overlap is exactly .5, and one below it."""
    from PIL import Image

    from ganforge.detect.data import LabelIssues
    from ganforge.detect.voc import parse_annotation

    Image.new("RGB", (64, 64)).save(tmp_path / "a.jpg")
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><filename>a.jpg</filename><size><width>64</width><height>64</height>"
                   "<depth>3</depth></size><object><name>one</name><difficult>0</difficult><bndbox>"
                   "<xmin>11</xmin><ymin>11</ymin><xmax>14</xmax><ymax>40</ymax></bndbox></object>"
                   "</annotation>")
    record = parse_annotation(xml, tmp_path / "a.jpg", ["one"], LabelIssues())
    gt = record.boxes[0].tolist()
    assert gt == [10.0, 10.0, 14.0, 40.0]  # the pixels 11..14 cover [10, 14]
    truth = [{"boxes": record.boxes, "labels": record.labels}]
    for det, expect in (([11.0, 10.0, 15.0, 40.0], 0.6), ([12.0, 10.0, 16.0, 40.0], 2 / 6)):
        devkit = _devkit_iou([det[0] + 1, det[1] + 1, det[2], det[3]], [gt[0] + 1, gt[1] + 1, gt[2], gt[3]])
        assert devkit == pytest.approx(expect)
        assert float(_iou_plus_one(torch.tensor([det]), record.boxes.double(), False)) == pytest.approx(devkit)
        ap = evaluate([_pred([det], [0.9], [0])], truth, 1).map
        assert ap == (1.0 if devkit > 0.5 else 0.0)
    # [11, 16] shares 3 of the 6 columns that it and the truth cover: an overlap of exactly .5, not a
    # match (it must exceed .5); the pixel added to continuous boxes makes it 4 / 7, a match
    wide = [[11.0, 10.0, 16.0, 40.0]]
    assert _devkit_iou([12.0, 11.0, 16.0, 40.0], [11.0, 11.0, 14.0, 40.0]) == pytest.approx(0.5)
    assert evaluate([_pred(wide, [0.9], [0])], truth, 1).map == 0.0
    assert evaluate([_pred(wide, [0.9], [0])], truth, 1, plus_one=True).map == 1.0  # the double count


def test_eleven_point_and_all_point_on_a_textbook_curve():
    recall = np.array([0.2, 0.4, 0.4, 0.6, 0.8])
    precision = np.array([1.0, 1.0, 0.67, 0.75, 0.8])
    assert average_precision(recall, precision, "voc07") == pytest.approx((5 * 1.0 + 4 * 0.8 + 2 * 0) / 11)
    assert average_precision(recall, precision, "voc12") == pytest.approx(0.4 * 1.0 + 0.4 * 0.8)
    with pytest.raises(ConfigError, match="valid: voc07, voc12, coco50"):
        evaluate([], [], 1, metric="voc10")


def _random_scenes(n_images: int, classes: int, seed: int):
    """Separated truth boxes (a detection overlaps at most one), jittered hits, misses and FPs."""
    rng = np.random.default_rng(seed)
    truths, preds = [], []
    for _ in range(n_images):
        slots = rng.permutation(16)[: rng.integers(0, 6)]
        boxes, labels = [], []
        for s in slots:
            x, y = (s % 4) * 100 + rng.uniform(0, 20), (s // 4) * 100 + rng.uniform(0, 20)
            boxes.append([x, y, x + rng.uniform(30, 60), y + rng.uniform(30, 60)])
            labels.append(int(rng.integers(classes)))
        det_boxes, det_scores, det_labels = [], [], []
        for box, label in zip(boxes, labels):
            for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections (a duplicate) per object
                jitter = rng.normal(0, 6, size=4)
                det_boxes.append(list(np.array(box) + jitter))
                det_scores.append(rng.uniform())
                det_labels.append(label if rng.uniform() > 0.15 else int(rng.integers(classes)))
        for _ in range(rng.integers(0, 3)):  # background false positives
            x, y = rng.uniform(0, 350, size=2)
            det_boxes.append([x, y, x + 40, y + 40])
            det_scores.append(rng.uniform())
            det_labels.append(int(rng.integers(classes)))
        truths.append(_truth(boxes, labels))
        preds.append(_pred(det_boxes, det_scores, det_labels))
    return preds, truths


def test_coco50_agrees_with_torchmetrics_where_the_settings_coincide():
    """No crowds, no +1, separated objects (VOC and COCO matching then coincide), < 100 per image.

    torchmetrics works in float32, which can move a recall that sits exactly on one of the 101
    thresholds (21/30 = 0.7 against linspace's 0.7000000000000001) to the other side: one threshold
    in 101, a difference below 1e-3. pycocotools itself, in float64, agrees to 1e-6 (next test)."""
    from torchmetrics.detection import MeanAveragePrecision

    for seed in range(3):
        preds, truths = _random_scenes(40, 4, seed=seed)
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5],
                                      class_metrics=True, backend="pycocotools")
        metric.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in truths])
        ref = metric.compute()
        ours = evaluate(preds, truths, 4, metric="coco50")
        assert ours.map == pytest.approx(float(ref["map_50"]), abs=1e-3)
        for c, value in zip(ref["classes"].tolist(), ref["map_per_class"].tolist()):
            assert ours.ap[c] == pytest.approx(value, abs=1e-3)
        assert 0.2 < ours.map < 0.9  # real misses, duplicates and false positives


def _cocoeval(preds, truths, classes, iou_thresholds=None, summarize=False):
    """pycocotools' COCOeval of these boxes (xyxy, converted to its xywh), evaluated and accumulated."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, truths)):
        images.append({"id": i})
        for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": label, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for (x1, y1, x2, y2), score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(dets), "bbox")
        if iou_thresholds is not None:
            coco_eval.params.iouThrs = np.array(iou_thresholds)
        coco_eval.evaluate()
        coco_eval.accumulate()
        if summarize:
            coco_eval.summarize()
    return coco_eval


def _pycocotools_ap50(preds, truths, classes):
    coco_eval = _cocoeval(preds, truths, classes, iou_thresholds=[0.5])
    return coco_eval.eval["precision"][0, :, :, 0, 2].mean(0)  # IoU, recall, class, area all, 100 dets


def test_coco50_equals_pycocotools_ap50():
    pytest.importorskip("pycocotools")
    for seed in range(3):
        preds, truths = _random_scenes(40, 4, seed=seed)
        ours = evaluate(preds, truths, 4, metric="coco50")
        ref = _pycocotools_ap50(preds, truths, 4)
        assert [ours.ap[c] for c in range(4)] == pytest.approx(ref.tolist(), abs=1e-6)


def _pycocotools_ap(preds, truths, classes):
    """pycocotools' AP@[.5:.95] per class (area all, 100 detections), as its first summary line."""
    coco_eval = _cocoeval(preds, truths, classes, summarize=True)
    precision = coco_eval.eval["precision"][:, :, :, 0, 2]  # IoU, recall, class, area all, 100 dets
    per_class = [float(precision[:, :, c].mean()) if (precision[:, :, c] > -1).all() else None
                 for c in range(classes)]
    return per_class, float(coco_eval.stats[0])


def _crowded_scenes(n_images, classes, seed):
    """Overlapping objects, many duplicates, and some images with more than 100 detections: where
    COCO's matching (best unmatched box, IoU >= t, 100 per image) differs from VOC's."""
    rng = np.random.default_rng(seed)
    truths, preds = [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 12))
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(10, 80, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(classes, size=n).tolist()
        det_boxes, det_scores, det_labels = [], [], []
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.integers(0, 15))):
                x1, y1, x2, y2 = box + rng.normal(0, 0.1 * (box[2] - box[0]), size=4)
                det_boxes.append([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])  # a valid box
                det_scores.append(float(rng.choice([rng.uniform(), 0.5])))  # some tied scores
                det_labels.append(label if rng.uniform() > 0.2 else int(rng.integers(classes)))
        for _ in range(int(rng.integers(0, 30))):
            x, y = rng.uniform(0, 250, size=2)
            det_boxes.append([x, y, x + rng.uniform(5, 60), y + rng.uniform(5, 60)])
            det_scores.append(float(rng.uniform()))
            det_labels.append(int(rng.integers(classes)))
        truths.append(_truth(boxes.tolist(), labels))
        preds.append(_pred(det_boxes, det_scores, det_labels))
    return preds, truths


@pytest.mark.parametrize("scenes,seed", [("separated", 0), ("separated", 1), ("crowded", 0), ("crowded", 1),
                                         ("crowded", 2), ("crowded", 3)])
def test_coco_equals_pycocotools_ap_50_95(scenes, seed):
    pytest.importorskip("pycocotools")
    classes = 4 if scenes == "separated" else 3
    preds, truths = (_random_scenes(40, classes, seed=seed) if scenes == "separated"
                     else _crowded_scenes(30, classes, seed))
    ours = evaluate(preds, truths, classes, metric="coco")
    per_class, stat = _pycocotools_ap(preds, truths, classes)
    assert [ours.ap[c] for c in range(classes)] == pytest.approx(per_class, abs=1e-6)
    assert ours.map == pytest.approx(stat, abs=1e-6)
    assert ours.label == "COCO mAP@[.5:.95]" and 0.05 < ours.map < 0.9
    assert ours.map < evaluate(preds, truths, classes, metric="coco50").map  # stricter IoUs only lower it


def test_coco_refuses_another_iou_and_has_no_ap_without_truth():
    preds, truths = _random_scenes(5, 2, seed=0)
    with pytest.raises(ConfigError, match="drop --iou"):
        evaluate(preds, truths, 2, metric="coco", iou=0.7)
    result = evaluate(preds, truths, 3, metric="coco")
    assert result.ap[2] is None and result.n_truth[2] == 0
