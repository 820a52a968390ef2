"""oLRP: hand cases, tie handling, and a brute-force reference over every score threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alrp_lab.eval import evaluate_report
from alrp_lab.eval.lrp import ClassLRP, mean_lrp, optimal_lrp
from tests.eval.conftest import make_coco


def test_hand_case(hand_case):
    # d1 TP (IoU 0.72), d2 FP, d3 TP (IoU 0.58); N_GT = 2; Eloc = (1 - IoU) / 0.5.
    # keep d1:       (0 FP + 1 FN + 0.56) / (1 + 0 + 1)  = 1.56 / 2 = 0.78   <- minimum
    # keep d1,d2:    (1 + 1 + 0.56) / (1 + 1 + 1)        = 2.56 / 3 = 0.853
    # keep d1,d2,d3: (1 + 0 + 0.56 + 0.84) / (2 + 1 + 0) = 2.40 / 3 = 0.8
    # components at the minimum: loc = 1 - 0.72, FP = 0/1, FN = 1/2, threshold 0.9.
    gt, dets = hand_case()
    report = evaluate_report(make_coco(gt), dets, backend="pycocotools")
    c = report.per_class_lrp[1]
    assert c.olrp == pytest.approx(0.78, abs=1e-12)
    assert c.loc == pytest.approx(0.28, abs=1e-12)
    assert (c.fp, c.fn, c.threshold) == (0.0, 0.5, 0.9)
    m = report.metrics
    assert (m["oLRP"], m["oLRP_loc"], m["oLRP_FP"], m["oLRP_FN"]) == pytest.approx(
        (0.78, 0.28, 0.0, 0.5), abs=1e-12
    )


def test_reversed_hand_case(hand_case):
    # d1 TP (0.58), d2 FP, d3 TP (0.72):
    # keep d1: (0 + 1 + 0.84) / 2 = 0.92; d1,d2: 2.84 / 3 = 0.947; all: (1 + 0.84 + 0.56) / 3
    # = 0.8 <- minimum, loc = mean(0.42, 0.28) = 0.35, FP = 1/3, FN = 0, threshold 0.7.
    gt, dets = hand_case(reverse=True)
    c = evaluate_report(make_coco(gt), dets).per_class_lrp[1]
    assert c.olrp == pytest.approx(0.8, abs=1e-12)
    assert c.loc == pytest.approx(0.35, abs=1e-12)
    assert c.fp == pytest.approx(1 / 3, abs=1e-15)
    assert (c.fn, c.threshold) == (0.0, 0.7)


def test_a_threshold_cannot_split_equal_scores():
    # Prefix [TP, TP] would give (0 + 0 + 0) / 2 = 0, but the second TP ties with an FP at
    # 0.8: the candidates are {0.9}: (0 + 1 + 0) / 2 = 0.5 and {0.9, 0.8, 0.8}: 1/3.
    c = optimal_lrp(
        np.array([0.9, 0.8, 0.8]),
        np.array([True, True, False]),
        np.array([1.0, 1.0, np.nan]),
        num_gt=2,
    )
    assert c.olrp == pytest.approx(1 / 3)
    assert (c.fp, c.fn, c.threshold) == (pytest.approx(1 / 3), 0.0, 0.8)


def test_no_tp_and_no_ground_truth():
    c = optimal_lrp(np.array([0.9, 0.1]), np.array([False, False]), np.full(2, np.nan), 3)
    assert (c.olrp, c.fn) == (1.0, 1.0)
    assert math.isnan(c.loc) and math.isnan(c.fp) and math.isnan(c.threshold)
    assert optimal_lrp(np.zeros(0), np.zeros(0, bool), np.zeros(0), 1).olrp == 1.0
    with pytest.raises(ValueError, match="num_gt"):
        optimal_lrp(np.array([0.5]), np.array([True]), np.array([0.9]), 0)


def test_mean_lrp_leaves_undefined_components_out():
    per_class = [
        ClassLRP(0.5, 0.2, 0.1, 0.3, 0.9),
        ClassLRP(1.0, math.nan, math.nan, 1.0, math.nan),
    ]
    assert mean_lrp(per_class) == pytest.approx(
        {"oLRP": 0.75, "oLRP_loc": 0.2, "oLRP_FP": 0.1, "oLRP_FN": 0.65}
    )
    assert all(math.isnan(v) for v in mean_lrp([]).values())


# ---- brute force: every threshold, matching from scratch ------------------------------------


def _naive_iou(d, g, crowd):
    iw = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    ih = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union


def _naive_match(dets, gts):
    """Greedy in the given order: best free non-crowd gt with IoU >= 0.5, else best crowd
    (re-usable, and the detection is then ignored). Yields 'tp' with IoU, 'fp' or 'ignore'."""
    used = set()
    for d in dets:
        best, best_iou = None, 0.5
        for want_crowd in (False, True):
            for j, g in enumerate(gts):
                if bool(g["iscrowd"]) != want_crowd or (j in used and not g["iscrowd"]):
                    continue
                iou = _naive_iou(d["bbox"], g["bbox"], g["iscrowd"])
                if iou >= best_iou:
                    best, best_iou = j, iou
            if best is not None:
                break
        if best is None:
            yield "fp", None
        elif gts[best]["iscrowd"]:
            yield "ignore", None
        else:
            used.add(best)
            yield "tp", best_iou


def _brute_force_olrp(gt, dets, cat, max_dets=100):
    gts = {}
    for a in gt["annotations"]:
        if a["category_id"] == cat:
            gts.setdefault(a["image_id"], []).append(a)
    num_gt = sum(not a["iscrowd"] for anns in gts.values() for a in anns)
    if num_gt == 0:
        return None
    per_image = {}
    for d in dets:
        if d["category_id"] == cat:
            per_image.setdefault(d["image_id"], []).append(d)
    per_image = {k: sorted(v, key=lambda d: -d["score"])[:max_dets] for k, v in per_image.items()}
    best = None
    for s in sorted({d["score"] for v in per_image.values() for d in v}, reverse=True):
        tp = fp = 0
        loc = 0.0
        for img, ds in per_image.items():
            for kind, iou in _naive_match([d for d in ds if d["score"] >= s], gts.get(img, [])):
                tp += kind == "tp"
                fp += kind == "fp"
                loc += (1 - iou) if kind == "tp" else 0.0
        if tp == 0:
            continue
        lrp = (fp + (num_gt - tp) + loc / 0.5) / (fp + num_gt)
        if best is None or lrp < best[0]:
            best = (lrp, loc / tp, fp / (tp + fp), (num_gt - tp) / num_gt, s)
    return best or (1.0, math.nan, math.nan, 1.0, math.nan)


@pytest.mark.parametrize(
    "seed, kwargs",
    [
        (21, {}),
        (22, {"tie_scores": True}),
        (23, {"crowded_image": True}),
        (24, {}),
        (25, {"num_images": 12, "tie_scores": True}),
    ],
)
def test_olrp_matches_brute_force(random_case, seed, kwargs):
    gt, dets = random_case(seed, **kwargs)
    report = evaluate_report(make_coco(gt), dets, backend="pycocotools")
    checked = 0
    for cat in (1, 3, 7):
        expected = _brute_force_olrp(gt, dets, cat)
        if expected is None:
            assert cat not in report.per_class_lrp
            continue
        c = report.per_class_lrp[cat]
        got = (c.olrp, c.loc, c.fp, c.fn, c.threshold)
        assert got == pytest.approx(expected, abs=1e-12, nan_ok=True), cat
        checked += 1
    assert checked >= 1
    values = list(report.per_class_lrp.values())
    assert report.metrics["oLRP"] == pytest.approx(np.mean([c.olrp for c in values]))
