"""COCO AP, input handling, and the matcher against pycocotools' own tables."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from alrp_lab.eval import evaluate_detections, evaluate_report
from alrp_lab.eval.coco import (
    detection_table,
    faster_coco_eval_available,
    ground_truth_table,
    load_detections,
)
from alrp_lab.eval.matching import accumulate_precision, match_detections, mean_precision
from tests.eval.conftest import gt_dataset, make_coco

# Hand case (see conftest): d1 TP 0.72, d2 FP, d3 TP 0.58; 2 ground truths.
# IoU 0.50, 0.55: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> interpolated 1 up to recall
#   0.5 (51 of the 101 recall points) and 2/3 above (50 points): (51 + 50 * 2/3) / 101.
# IoU 0.60 .. 0.70: only d1 is a TP: precision 1 up to recall 0.5, then 0: 51 / 101.
# IoU 0.75 .. 0.95: no TP: 0.  AP = (2 * 253/303 + 3 * 51/101) / 10 = 965/3030.
AP_BOTH = (51 + 50 * 2 / 3) / 101
AP_ONE = 51 / 101
HAND_AP = (2 * AP_BOTH + 3 * AP_ONE) / 10


def _quiet_cocoeval(coco_gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
    return ev


def test_hand_case_ap(hand_case):
    gt, dets = hand_case()
    m = evaluate_detections(make_coco(gt), dets, backend="pycocotools")
    assert m["AP"] == pytest.approx(HAND_AP, abs=1e-12)
    assert m["AP"] == pytest.approx(965 / 3030, abs=1e-12)
    assert m["AP50"] == pytest.approx(AP_BOTH, abs=1e-12)
    assert m["AP75"] == 0.0 and m["AP90"] == 0.0
    assert m["APl"] == pytest.approx(HAND_AP, abs=1e-12)  # 100x100 boxes are "large"
    assert math.isnan(m["APs"]) and math.isnan(m["APm"])  # COCO's -1: no such ground truth


def test_reversed_hand_case_moves_the_tp_at_high_iou(hand_case):
    # At IoU 0.60 .. 0.70 the TP is now d3 (rank 3): precision 1/3 up to recall 0.5.
    gt, dets = hand_case(reverse=True)
    m = evaluate_detections(make_coco(gt), dets, backend="pycocotools")
    assert m["AP"] == pytest.approx((2 * AP_BOTH + 3 * AP_ONE / 3) / 10, abs=1e-12)
    assert m["AP50"] == pytest.approx(AP_BOTH, abs=1e-12)


def test_perfect_detections(random_case):
    gt, _ = random_case(11)
    # Integer boxes: with float ones pycocotools' IoU of a box with itself is 1 -+ 4e-16,
    # and rho would rank that rounding noise.
    for a in gt["annotations"]:
        a["bbox"] = [float(round(v)) for v in a["bbox"]]
        a["area"] = a["bbox"][2] * a["bbox"][3]
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0 - 0.001 * a["id"],
        }
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    m = evaluate_detections(make_coco(gt), dets, backend="pycocotools")
    for key in ("AP", "AP50", "AP75", "AP90"):
        assert m[key] == pytest.approx(1.0)
    assert m["oLRP"] == 0.0 and m["oLRP_loc"] == 0.0
    assert m["oLRP_FP"] == 0.0 and m["oLRP_FN"] == 0.0
    assert math.isnan(m["rho"])  # every IoU is 1: constant ranks


@pytest.mark.parametrize("bounds", [False, True])
def test_no_detections(hand_case, bounds):
    gt, _ = hand_case()
    m = evaluate_detections(make_coco(gt), [], bounds=bounds)
    assert m["AP"] == 0.0 and m["AP50"] == 0.0 and m["AP90"] == 0.0
    assert m["oLRP"] == 1.0 and m["oLRP_FN"] == 1.0
    assert math.isnan(m["oLRP_loc"]) and math.isnan(m["oLRP_FP"]) and math.isnan(m["rho"])
    if bounds:
        assert m["upper_AP"] == 0.0 and m["lower_AP"] == 0.0 and math.isnan(m["upper_rho"])


def test_paths_and_summary(tmp_path, hand_case):
    gt, dets = hand_case()
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    before = copy.deepcopy(dets)
    report = evaluate_report(gt_path, dt_path, backend="pycocotools")
    assert report.metrics["AP"] == pytest.approx(HAND_AP, abs=1e-12)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in report.summary
    assert "Running per image" not in report.summary  # only the summary table is kept
    # NaN-aware, and to rounding: the AP keys come from whichever backend is installed.
    assert evaluate_detections(make_coco(gt), dets) == pytest.approx(
        report.metrics, abs=1e-12, nan_ok=True
    )
    assert dets == before  # loadRes adds keys to its input; ours must not


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_id": 99}, "image ids not in the ground truth"),
        ({"category_id": 5}, "category ids not in the ground truth"),
        ({"bbox": [0, 0, -1, 5]}, "w, h >= 0"),
        ({"bbox": [0, 0, 5]}, r"\[x, y, w, h\]"),
        ({"score": float("nan")}, "non-finite score"),
        ({"score": None}, "not a COCO result dict"),
    ],
)
def test_bad_detections_raise_one_clear_error(hand_case, change, message):
    gt, dets = hand_case()
    dets[1] = {**dets[1], **change}
    with pytest.raises(ValueError, match=message):
        evaluate_detections(make_coco(gt), dets)


def test_bad_inputs(tmp_path, hand_case):
    gt, dets = hand_case()
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_detections(tmp_path / "missing.json", dets)
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_detections(make_coco(gt), tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate_detections(tmp_path / "bad.json", dets)
    zero_id = copy.deepcopy(gt)
    zero_id["annotations"][0]["id"] = 0
    with pytest.raises(ValueError, match="unique positive"):
        evaluate_detections(make_coco(zero_id), dets)
    no_area = copy.deepcopy(gt)
    del no_area["annotations"][0]["area"]
    with pytest.raises(ValueError, match="area"):
        evaluate_detections(make_coco(no_area), dets)
    with pytest.raises(ValueError, match="backend"):
        evaluate_detections(make_coco(gt), dets, backend="detectron2")
    with pytest.raises(ValueError, match="list of"):
        evaluate_detections(make_coco(gt), {"image_id": 1})


def _reference_tables(ev: COCOeval, category_ids, image_ids):
    """Per class, COCOeval's pooled tables as its accumulate() builds them, plus the IoU of
    each match at 0.5 read from ``ev.ious`` (the route of the brief, used as the oracle)."""
    per_img = {
        (e["category_id"], e["image_id"]): e
        for e in ev.evalImgs
        if e is not None and e["aRng"] == [0, 1e10]
    }
    out = []
    for cat in category_ids:
        scores, dtm, dt_ig, ious, num_gt = [], [], [], [], 0
        for img in image_ids:
            e = per_img.get((cat, img))
            if e is None:
                continue
            gt_col = {g["id"]: j for j, g in enumerate(ev._gts[img, cat])}
            scores.append(np.asarray(e["dtScores"][:100]))
            dtm.append(e["dtMatches"][:, :100])
            dt_ig.append(e["dtIgnore"][:, :100])
            iou = np.full(len(e["dtIds"]), np.nan)
            for d, gid in enumerate(e["dtMatches"][0]):
                if gid > 0 and not e["dtIgnore"][0, d]:
                    iou[d] = ev.ious[img, cat][d, gt_col[int(gid)]]
            ious.append(iou)
            num_gt += int((e["gtIgnore"] == 0).sum())
        if not scores:
            out.append(None)
            continue
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")
        dtm_all = np.concatenate(dtm, axis=1)[:, order]
        ig_all = np.concatenate(dt_ig, axis=1)[:, order].astype(bool)
        out.append((s[order], (dtm_all > 0) & ~ig_all, ig_all, np.concatenate(ious)[order], num_gt))
    return out


@pytest.mark.parametrize(
    "seed, kwargs",
    [(1, {}), (2, {"tie_scores": True}), (3, {"crowded_image": True}), (4, {"num_images": 14})],
)
def test_matcher_and_precision_reproduce_cocoeval(random_case, seed, kwargs):
    gt, dets = random_case(seed, **kwargs)
    coco_gt = make_coco(gt)
    ev = _quiet_cocoeval(coco_gt, dets)
    cats, imgs = sorted(coco_gt.getCatIds()), sorted(coco_gt.getImgIds())
    ours = match_detections(
        ground_truth_table(coco_gt), detection_table(load_detections(dets, coco_gt)), imgs, cats
    )
    reference = _reference_tables(ev, cats, imgs)
    assert sum(r is not None and r[2].any() for r in reference) > 0 or seed != 3
    for mine, ref in zip(ours, reference, strict=True):
        if ref is None:
            assert len(mine.scores) == 0 and mine.num_gt == 0
            continue
        scores, tp, ignored, iou, num_gt = ref
        np.testing.assert_array_equal(mine.scores, scores)
        np.testing.assert_array_equal(mine.tp, tp)
        np.testing.assert_array_equal(mine.ignored, ignored)
        np.testing.assert_array_equal(mine.iou, iou)  # bit-identical, NaN where no TP
        assert mine.num_gt == num_gt

    precision = np.stack([accumulate_precision(m.tp, m.ignored, m.num_gt) for m in ours], -1)
    np.testing.assert_array_equal(precision, ev.eval["precision"][:, :, :, 0, 2])
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    assert mean_precision(precision) == pytest.approx(ev.stats[0], abs=1e-15)
    m = evaluate_detections(coco_gt, dets, backend="pycocotools")
    assert m["AP"] == pytest.approx(ev.stats[0], abs=1e-15)
    assert m["AP75"] == pytest.approx(ev.stats[2], abs=1e-15)


def test_random_case_exercises_crowds_ties_and_the_detection_cap(random_case):
    # Guards the fixture itself: the comparisons above must see crowd matches, score ties
    # and an image/class with more than 100 detections.
    gt, dets = random_case(3, crowded_image=True)
    assert any(a["iscrowd"] for a in gt["annotations"])
    counts = {}
    for d in dets:
        key = (d["image_id"], d["category_id"])
        counts[key] = counts.get(key, 0) + 1
    assert max(counts.values()) > 100
    _, tied = random_case(2, tie_scores=True)
    assert len({d["score"] for d in tied}) < len(tied)


def test_empty_categories_and_images_are_allowed():
    gt = gt_dataset([1, 2], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    m = evaluate_detections(
        make_coco(gt),
        [
            {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.5},
        ],
        backend="pycocotools",
    )
    # Category 7 has no ground truth: skipped by AP (-1) and oLRP; category 1 is missed.
    assert m["AP"] == 0.0 and m["oLRP"] == 1.0 and m["oLRP_FN"] == 1.0


@pytest.mark.skipif(not faster_coco_eval_available(), reason="faster-coco-eval not installed")
def test_faster_backend_agrees_with_pycocotools(random_case):
    gt, dets = random_case(5)
    ref = evaluate_detections(make_coco(gt), dets, backend="pycocotools")
    fast = evaluate_detections(make_coco(gt), dets, backend="faster_coco_eval")
    for key, value in ref.items():
        assert fast[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
