"""Detection metrics of the paper: COCO AP, oLRP, rho and the Table 5 bounds (SPEC section 3).

``evaluate_detections(gt, dt)`` is the entry point; ``evaluate_report`` returns the same
numbers with pycocotools' printed summary and the per-class values.

COCO AP comes from the backend (pycocotools, or faster-coco-eval when installed). oLRP, rho
and the bounds come from ``matching.match_detections``, a re-implementation of COCOeval's
greedy matching that exposes the match tables (tested against ``COCOeval.evalImgs``), so
they do not depend on the backend.
"""

from alrp_lab.eval.correlation import spearman, toy_ap
from alrp_lab.eval.lrp import ClassLRP, optimal_lrp
from alrp_lab.eval.pipeline import EvaluationReport, evaluate_detections, evaluate_report

__all__ = [
    "ClassLRP",
    "EvaluationReport",
    "evaluate_detections",
    "evaluate_report",
    "optimal_lrp",
    "spearman",
    "toy_ap",
]
