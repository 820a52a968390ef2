"""The evaluation pipeline: ground truth and detections in, AP, oLRP, rho and the bounds out.

COCO AP comes from the backend (pycocotools, or faster-coco-eval when installed); oLRP, rho
and the Table 5 bounds from :func:`alrp_lab.eval.matching.match_detections`, so they do not
depend on the backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pycocotools.coco import COCO

from alrp_lab.eval.coco import (
    CocoResult,
    detection_table,
    ground_truth_table,
    load_detections,
    load_ground_truth,
    run_coco_eval,
)
from alrp_lab.eval.correlation import (
    bound_matches,
    bound_precision,
    class_rho,
    mean_rho,
)
from alrp_lab.eval.lrp import ClassLRP, mean_lrp, optimal_lrp
from alrp_lab.eval.matching import (
    IOU_THRESHOLDS,
    ClassMatches,
    match_detections,
    mean_precision,
)


@dataclass(frozen=True)
class EvaluationReport:
    """Everything one evaluation computed.

    Attributes:
        metrics: what ``evaluate_detections`` returns.
        summary: the table pycocotools' ``summarize()`` prints.
        per_class_lrp: category id -> ``ClassLRP``, for classes with ground truth.
        per_class_rho: category id -> rho (NaN for fewer than two TPs or constant ranks).
        backend: the COCO backend that computed AP.
    """

    metrics: dict[str, float]
    summary: str
    per_class_lrp: dict[int, ClassLRP]
    per_class_rho: dict[int, float]
    backend: str


def _class_lrp(matches: ClassMatches) -> ClassLRP:
    keep = ~matches.ignored[0]  # crowd matches are neither TP nor FP
    return optimal_lrp(matches.scores[keep], matches.tp[0][keep], matches.iou[keep], matches.num_gt)


def _bound_metrics(per_class: Sequence[ClassMatches], prefix: str, upper: bool) -> dict:
    precision = bound_precision(per_class, upper)
    return {
        f"{prefix}_AP": mean_precision(precision),
        f"{prefix}_AP50": mean_precision(precision, IOU_THRESHOLDS, 0.5),
        f"{prefix}_AP75": mean_precision(precision, IOU_THRESHOLDS, 0.75),
        f"{prefix}_AP90": mean_precision(precision, IOU_THRESHOLDS, 0.9),
        f"{prefix}_rho": mean_rho([class_rho(bound_matches(m, upper)) for m in per_class]),
    }


def evaluate_report(
    gt: str | Path | COCO,
    dt: str | Path | Sequence[Mapping],
    *,
    bounds: bool = False,
    backend: str = "auto",
) -> EvaluationReport:
    """Evaluate COCO-format detections; see ``evaluate_detections`` for the metrics.

    Args:
        gt: annotation JSON path or pycocotools ``COCO``.
        dt: results JSON path or list of ``{image_id, category_id, bbox (x, y, w, h), score}``.
        bounds: also compute the Table 5 bounds.
        backend: "auto" (faster-coco-eval when installed), "pycocotools" or
            "faster_coco_eval"; it only affects the AP keys.

    Returns:
        An ``EvaluationReport``.
    """
    coco_gt = load_ground_truth(gt)
    dets = load_detections(dt, coco_gt)
    coco: CocoResult = run_coco_eval(coco_gt, dets, backend)

    category_ids = sorted(coco_gt.getCatIds())
    per_class = match_detections(
        ground_truth_table(coco_gt),
        detection_table(dets),
        sorted(coco_gt.getImgIds()),
        category_ids,
    )
    lrp = {m.category_id: _class_lrp(m) for m in per_class if m.num_gt > 0}
    rho = {m.category_id: class_rho(m) for m in per_class if m.num_gt > 0}

    metrics = dict(coco.metrics)
    metrics.update(mean_lrp(list(lrp.values())))
    metrics["rho"] = mean_rho(list(rho.values()))
    if bounds:
        metrics.update(_bound_metrics(per_class, "upper", upper=True))
        metrics.update(_bound_metrics(per_class, "lower", upper=False))
    return EvaluationReport(metrics, coco.summary, lrp, rho, coco.backend)


def evaluate_detections(
    gt: str | Path | COCO,
    dt: str | Path | Sequence[Mapping],
    *,
    bounds: bool = False,
    backend: str = "auto",
) -> dict[str, float]:
    """COCO AP, oLRP and rho of a detection result (SPEC section 3); all values in [0, 1]
    except rho in [-1, 1].

    Keys:
        ``AP, AP50, AP75, AP90, APs, APm, APl``: COCOeval bbox (NaN where COCO gives -1, i.e.
        no ground truth in that area range); AP90 is read from COCOeval's precision array.
        ``oLRP, oLRP_loc, oLRP_FP, oLRP_FN``: moLRP and its components, means over classes
        with ground truth (components undefined for a class without TPs are left out).
        ``rho``: mean Spearman correlation of score and IoU over the TPs at IoU 0.5 of each
        class with at least two TPs and non-constant ranks; NaN when no class qualifies.
        With ``bounds=True`` also ``upper_AP, upper_AP50, upper_AP75, upper_AP90,
        upper_rho`` and the same with ``lower_`` (see ``alrp_lab.eval.correlation``).

    No detections at all is valid: AP 0, oLRP 1, oLRP_FN 1, oLRP_loc/oLRP_FP and rho NaN.
    Ground truth without any annotation makes every value NaN.

    Args:
        gt: annotation JSON path or pycocotools ``COCO``.
        dt: results JSON path or list of ``{image_id, category_id, bbox (x, y, w, h), score}``.
        bounds: also compute the Table 5 bounds.
        backend: "auto", "pycocotools" or "faster_coco_eval" (AP keys only).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: malformed input, or detections for an image or category not in ``gt``.
    """
    return evaluate_report(gt, dt, bounds=bounds, backend=backend).metrics
