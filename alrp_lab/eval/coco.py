"""COCO AP through pycocotools (or faster-coco-eval), with input checks and quiet output.

pycocotools prints as it works and fails deep inside on bad input (``loadRes`` raises
IndexError on an empty list and AssertionError on an unknown image); here every input is
checked first and fails with one ``ValueError``/``FileNotFoundError`` that names the fix,
and the printed summary is captured into ``CocoResult.summary``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from alrp_lab.errors import DataError, DataNotFoundError
from alrp_lab.eval.matching import DetectionTable, GroundTruthTable, mean_precision

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
# COCOeval.stats order for bounding boxes: the first six are the ones reported.
_STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class CocoResult:
    """What the COCO evaluator produced.

    Attributes:
        metrics: AP, AP50, AP75, AP90, APs, APm, APl in [0, 1]; NaN where COCO reports -1
            (no ground truth in that area range).
        precision: (T, R, K) float64, COCOeval's ``eval['precision']`` for area "all" and
            100 detections: T = 10 IoU thresholds, R = 101 recall thresholds, K classes
            (sorted category ids), -1 for classes without ground truth.
        summary: the text ``COCOeval.summarize()`` prints.
        backend: the backend that ran.
    """

    metrics: dict[str, float]
    precision: np.ndarray
    summary: str
    backend: str


def _quiet_call(fn, *args, **kwargs):
    """Call ``fn`` with stdout captured; returns (result, captured text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args, **kwargs)
    return result, buffer.getvalue()


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataNotFoundError(f"{what} file not found: {path}; check the path")
    try:
        with path.open() as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{what} file {path} is not valid JSON ({err}); regenerate it") from err


def load_ground_truth(gt: str | Path | COCO) -> COCO:
    """The ground truth as a pycocotools ``COCO``, checked for what COCOeval needs.

    Args:
        gt: a COCO annotation JSON path, or a ``COCO`` (used as is, not copied).

    Returns:
        The ``COCO`` object.
    """
    if isinstance(gt, COCO):
        coco = gt
    elif isinstance(gt, (str, Path)):
        dataset = _read_json(Path(gt), "ground-truth annotation")
        if not isinstance(dataset, dict):
            raise DataError(f"{gt}: an annotation file holds a JSON object, not a list")
        coco = COCO()
        coco.dataset = dataset
        _quiet_call(coco.createIndex)
    else:
        raise DataError(
            f"gt must be an annotation JSON path or a pycocotools COCO, got {type(gt).__name__}"
        )
    _check_ground_truth(coco.dataset)
    return coco


def _check_ground_truth(dataset: Mapping) -> None:
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise DataError(f"ground truth has no '{key}' list; it is not a COCO annotation file")
    ids = []
    for ann in dataset["annotations"]:
        missing = [k for k in ("id", "image_id", "category_id", "bbox", "area") if k not in ann]
        if missing:
            raise DataError(
                f"ground-truth annotation {ann.get('id', '?')} lacks {missing}; COCOeval needs "
                "every annotation to have id, image_id, category_id, bbox (x, y, w, h) and area"
            )
        if len(ann["bbox"]) != 4:
            raise DataError(f"ground-truth annotation {ann['id']} bbox must be [x, y, w, h]")
        ids.append(ann["id"])
    # pycocotools stores the matched ground-truth id in a float array where 0 means
    # "unmatched", so an id of 0 silently turns a TP into an FP.
    if any(i <= 0 for i in ids) or len(set(ids)) != len(ids):
        raise DataError(
            "ground-truth annotation ids must be unique positive integers (pycocotools treats "
            "id 0 as unmatched); renumber them 1..N"
        )


def ground_truth_table(coco: COCO) -> GroundTruthTable:
    """The annotations of ``coco`` as arrays, in file order."""
    anns = coco.dataset["annotations"]
    return GroundTruthTable(
        image_id=np.array([a["image_id"] for a in anns], dtype=np.int64),
        category_id=np.array([a["category_id"] for a in anns], dtype=np.int64),
        bbox=np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
        area=np.array([a["area"] for a in anns], dtype=np.float64),
        # pycocotools: ``'iscrowd' in g and g['iscrowd']``; absent means not crowd.
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
    )


def load_detections(dt: str | Path | Sequence[Mapping], coco_gt: COCO) -> list[dict]:
    """Detections as a list of fresh dicts, checked against the ground truth.

    Args:
        dt: a COCO results JSON path, or a list of ``{image_id, category_id, bbox: [x, y, w,
            h], score}`` dicts (not modified; pycocotools' ``loadRes`` would add keys).
        coco_gt: the ground truth the detections refer to.

    Returns:
        Copies of the detections with the four keys, ``bbox`` as four floats. May be empty.
    """
    if isinstance(dt, (str, Path)):
        dt = _read_json(Path(dt), "detection results")
    if not isinstance(dt, Sequence) or isinstance(dt, (str, bytes)):
        raise DataError(
            "dt must be a results JSON path or a list of {image_id, category_id, bbox, score} "
            f"dicts, got {type(dt).__name__}"
        )
    dets = []
    for i, d in enumerate(dt):
        try:
            det = {
                "image_id": d["image_id"],
                "category_id": d["category_id"],
                "bbox": [float(v) for v in d["bbox"]],
                "score": float(d["score"]),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"detection {i} is not a COCO result dict {{image_id, category_id, bbox: "
                f"[x, y, w, h], score}}: {d!r:.200}"
            ) from err
        box = det["bbox"]
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
            raise DataError(
                f"detection {i} bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0; got "
                f"{box} (convert (x1, y1, x2, y2) boxes with box_xyxy_to_xywh)"
            )
        if not math.isfinite(det["score"]):
            raise DataError(f"detection {i} has a non-finite score {det['score']}")
        dets.append(det)
    _check_ids(dets, coco_gt)
    return dets


def _check_ids(dets: list[dict], coco_gt: COCO) -> None:
    image_ids = {d["image_id"] for d in dets}
    unknown = sorted(image_ids - set(coco_gt.getImgIds()), key=str)
    if unknown:
        raise DataError(
            f"detections refer to image ids not in the ground truth: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; evaluate against the annotation file the "
            "images came from"
        )
    cat_ids = {d["category_id"] for d in dets}
    unknown = sorted(cat_ids - set(coco_gt.getCatIds()), key=str)
    if unknown:
        raise DataError(
            f"detections refer to category ids not in the ground truth: {unknown[:5]}; map "
            "contiguous labels 0..C-1 back to COCO category ids (label_to_category_id)"
        )


def detection_table(dets: Sequence[Mapping]) -> DetectionTable:
    """Checked detections (from ``load_detections``) as arrays, in list order."""
    return DetectionTable(
        image_id=np.array([d["image_id"] for d in dets], dtype=np.int64),
        category_id=np.array([d["category_id"] for d in dets], dtype=np.int64),
        bbox=np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4),
        score=np.array([d["score"] for d in dets], dtype=np.float64),
    )


def faster_coco_eval_available() -> bool:
    """Whether the optional faster-coco-eval package is installed."""
    return find_spec("faster_coco_eval") is not None


def resolve_backend(backend: str) -> str:
    """The backend to run: "auto" picks faster-coco-eval when it is installed."""
    if backend not in BACKENDS:
        raise DataError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"
    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        raise DataError(
            "backend='faster_coco_eval' needs `pip install faster-coco-eval`; or use "
            "backend='pycocotools'"
        )
    return backend


def _empty_results(coco_gt: COCO) -> COCO:
    """A results ``COCO`` without detections (``loadRes`` cannot make one)."""
    res = COCO()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    _quiet_call(res.createIndex)
    return res


def _make_evaluator(coco_gt: COCO, dets: list[dict], backend: str):
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        gt_fast, _ = _quiet_call(FasterCOCO, copy.deepcopy(coco_gt.dataset))
        dt_fast, _ = _quiet_call(gt_fast.loadRes, copy.deepcopy(dets))
        return COCOeval_faster(gt_fast, dt_fast, "bbox")
    dt_coco = _quiet_call(coco_gt.loadRes, dets)[0] if dets else _empty_results(coco_gt)
    return COCOeval(coco_gt, dt_coco, "bbox")


def run_coco_eval(coco_gt: COCO, dets: list[dict], backend: str = "auto") -> CocoResult:
    """COCO bbox AP of checked detections.

    Args:
        coco_gt: from ``load_ground_truth``.
        dets: from ``load_detections`` (may be empty: every AP is then 0).
        backend: "auto", "pycocotools" or "faster_coco_eval".

    Returns:
        A ``CocoResult``. AP90 is read from the precision array at IoU 0.90 and averaged
        like AP (entries of -1 left out).
    """
    # faster-coco-eval's loadRes has the same empty-list problem: the reference handles it.
    backend = resolve_backend(backend) if dets else "pycocotools"
    # loadRes adds keys to the dicts it is given; hand it copies.
    evaluator = _make_evaluator(coco_gt, copy.deepcopy(dets), backend)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        evaluator.evaluate()
        evaluator.accumulate()
        buffer.truncate(0)  # keep only the summary table
        buffer.seek(0)
        evaluator.summarize()
    area_all = list(evaluator.params.areaRngLbl).index("all")
    max_100 = list(evaluator.params.maxDets).index(100)
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, area_all, max_100]
    stats = np.asarray(evaluator.stats, dtype=np.float64)
    metrics = {
        key: float(stats[i]) if stats[i] > -1 else math.nan for i, key in enumerate(_STAT_KEYS)
    }
    metrics["AP90"] = mean_precision(precision, np.asarray(evaluator.params.iouThrs), 0.9)
    ordered = {k: metrics[k] for k in ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl")}
    return CocoResult(ordered, precision, buffer.getvalue(), backend)


__all__ = [
    "BACKENDS",
    "CocoResult",
    "detection_table",
    "faster_coco_eval_available",
    "ground_truth_table",
    "load_detections",
    "load_ground_truth",
    "resolve_backend",
    "run_coco_eval",
]
