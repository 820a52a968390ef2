"""COCO-style greedy matching and precision accumulation on plain numpy tables.

This reproduces what pycocotools' ``COCOeval.evaluateImg`` and ``COCOeval.accumulate`` do for
bounding boxes, area range "all" and ``maxDets=100``, but returns the match tables instead of
hiding them: oLRP, rho and the Table 5 bounds all need to know which detection matched which
ground truth, and the optional faster-coco-eval backend does not expose them. The tests
compare every table against ``COCOeval.evalImgs`` and ``COCOeval.eval['precision']``.

Boxes here are COCO ``(x, y, w, h)``, as in annotation and result files. IoUs come from
``pycocotools.mask.iou`` itself so that they are bit-identical to COCOeval's (which matters
for detections whose IoU sits exactly on a threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import Params

_PARAMS = Params(iouType="bbox")
#: (10,) COCO IoU thresholds 0.50:0.05:0.95, taken from pycocotools so they are bit-identical.
IOU_THRESHOLDS: np.ndarray = _PARAMS.iouThrs
#: (101,) COCO recall thresholds 0:0.01:1.
RECALL_THRESHOLDS: np.ndarray = _PARAMS.recThrs
#: Area range "all": ground truths outside it are ignored, as are unmatched detections.
AREA_ALL: tuple[float, float] = tuple(_PARAMS.areaRng[0])
#: Detections kept per image and class, as COCOeval's ``maxDets[-1]``.
MAX_DETS: int = _PARAMS.maxDets[-1]


@dataclass(frozen=True)
class GroundTruthTable:
    """Ground-truth annotations in file order (N annotations).

    Attributes:
        image_id: (N,) int64.
        category_id: (N,) int64.
        bbox: (N, 4) float64, ``(x, y, w, h)``.
        area: (N,) float64, the annotation's ``area`` field (COCOeval's area ranges use it).
        iscrowd: (N,) bool.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray


@dataclass(frozen=True)
class DetectionTable:
    """Detections in result-file order (N detections).

    Attributes:
        image_id: (N,) int64.
        category_id: (N,) int64.
        bbox: (N, 4) float64, ``(x, y, w, h)``.
        score: (N,) float64.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections pooled over images, in COCOeval's accumulation order.

    That order is: images by increasing id, each image's detections sorted by score
    (stable) and cut to ``max_dets``, then the concatenation stably sorted by score,
    highest first. T is the number of IoU thresholds, N the number of detections.

    Attributes:
        category_id: the COCO category id.
        scores: (N,) float64, non-increasing.
        tp: (T, N) bool, matched to a non-ignored ground truth at threshold t.
        ignored: (T, N) bool, matched to an ignored (crowd) ground truth at threshold t, or
            unmatched and outside the area range; neither TP nor FP.
        iou: (N,) float64, IoU with the ground truth matched at the first threshold (0.5);
            NaN where ``tp[0]`` is False.
        num_gt: number of non-ignored ground truths of the class.
    """

    category_id: int
    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    iou: np.ndarray
    num_gt: int

    @property
    def fp(self) -> np.ndarray:
        """(T, N) bool: neither matched to a non-ignored ground truth nor ignored."""
        return ~self.tp & ~self.ignored


def box_iou_coco(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """COCO IoU between detections and ground truths (``pycocotools.mask.iou``).

    For a crowd ground truth the union is the detection's area alone, as in COCO.

    Args:
        dt_boxes: (D, 4) float64 ``(x, y, w, h)``.
        gt_boxes: (G, 4) float64 ``(x, y, w, h)``.
        gt_crowd: (G,) bool.

    Returns:
        (D, G) float64.
    """
    if len(dt_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(dt_boxes), len(gt_boxes)))
    return np.asarray(
        mask_utils.iou(
            np.ascontiguousarray(dt_boxes, dtype=np.float64),
            np.ascontiguousarray(gt_boxes, dtype=np.float64),
            np.asarray(gt_crowd, dtype=np.uint8),
        ),
        dtype=np.float64,
    ).reshape(len(dt_boxes), len(gt_boxes))


def _last_argmax(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the index of the last maximum of ``values`` where ``mask`` holds, else -1.

    COCOeval replaces its running best on equal IoU (``if iou < best: continue``), so among
    tied ground truths the last one wins; argmax over the reversed row finds it.

    Args:
        mask: (T, G) bool.
        values: (G,) float64.

    Returns:
        (T,) int64.
    """
    masked = np.where(mask, values[None, :], -np.inf)
    idx = mask.shape[1] - 1 - np.argmax(masked[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), idx, -1)


def match_image(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, iou_thrs: np.ndarray
) -> np.ndarray:
    """Greedy COCO matching of one image and class at every IoU threshold at once.

    Detections are visited in the given order (score, highest first). Each takes the
    best-IoU ground truth with IoU >= threshold that is still free (crowd ones are never
    used up), preferring non-ignored over ignored ones, exactly as ``COCOeval.evaluateImg``.

    Args:
        ious: (D, G) float64, rows sorted by score descending.
        gt_ignore: (G,) bool, ground truths to ignore (crowd or outside the area range).
        gt_crowd: (G,) bool, crowd ground truths (may be matched repeatedly).
        iou_thrs: (T,) float64.

    Returns:
        (T, D) int64: column of the matched ground truth, -1 where unmatched.
    """
    num_dt, num_gt = ious.shape
    match = np.full((len(iou_thrs), num_dt), -1, dtype=np.int64)
    if num_dt == 0 or num_gt == 0:
        return match
    # COCOeval caps the threshold just below 1 so that a perfect box matches at IoU 1.0.
    thr = np.minimum(np.asarray(iou_thrs, dtype=np.float64), 1 - 1e-10)[:, None]
    taken = np.zeros((len(iou_thrs), num_gt), dtype=bool)
    rows = np.arange(len(iou_thrs))
    # Detections below the lowest threshold with every ground truth can never match.
    for d in np.flatnonzero((ious >= thr.min()).any(axis=1)):
        row = ious[d]
        ok = (row[None, :] >= thr) & (~taken | gt_crowd[None, :])
        chosen = _last_argmax(ok & ~gt_ignore[None, :], row)
        chosen = np.where(chosen >= 0, chosen, _last_argmax(ok & gt_ignore[None, :], row))
        hit = chosen >= 0
        match[hit, d] = chosen[hit]
        taken[rows[hit], chosen[hit]] = True
    return match


def _group(category_id: np.ndarray, image_id: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Indices of each (category, image) pair, in their original (file) order."""
    if len(category_id) == 0:
        return {}
    order = np.lexsort((image_id, category_id))  # lexsort is stable: file order kept
    keys = np.stack([category_id[order], image_id[order]], axis=1)
    cuts = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(order)]])
    return {
        (int(keys[s, 0]), int(keys[s, 1])): order[s:e] for s, e in zip(starts, ends, strict=True)
    }


def _match_pair(
    gt: GroundTruthTable,
    gt_idx: np.ndarray,
    dt: DetectionTable,
    dt_idx: np.ndarray,
    iou_thrs: np.ndarray,
    max_dets: int,
    area_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Match one (image, class): returns scores (D,), tp (T,D), ignored (T,D), iou (D,), #gt."""
    area = gt.area[gt_idx]
    crowd = gt.iscrowd[gt_idx]
    ignore = crowd | (area < area_range[0]) | (area > area_range[1])
    # COCOeval puts ignored ground truths last (stable), which is what makes it prefer
    # a non-crowd match over a crowd one.
    gt_order = np.argsort(ignore, kind="mergesort")
    ignore, crowd = ignore[gt_order], crowd[gt_order]
    gt_boxes = gt.bbox[gt_idx][gt_order]

    scores = dt.score[dt_idx]
    dt_order = np.argsort(-scores, kind="mergesort")[:max_dets]
    scores = scores[dt_order]
    dt_boxes = dt.bbox[dt_idx][dt_order]

    ious = box_iou_coco(dt_boxes, gt_boxes, crowd)
    match = match_image(ious, ignore, crowd, iou_thrs)
    matched = match >= 0
    # A padded False makes index -1 (unmatched) read "not ignored" when there is no gt.
    matched_ignored = np.append(ignore, False)[match]
    dt_area = dt_boxes[:, 2] * dt_boxes[:, 3]
    outside = (dt_area < area_range[0]) | (dt_area > area_range[1])
    ignored = np.where(matched, matched_ignored, outside[None, :])
    tp = matched & ~ignored
    iou0 = np.full(len(scores), np.nan)
    iou0[tp[0]] = ious[np.flatnonzero(tp[0]), match[0, tp[0]]]
    return scores, tp, ignored, iou0, int((~ignore).sum())


def match_detections(
    gt: GroundTruthTable,
    dt: DetectionTable,
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    *,
    iou_thrs: np.ndarray = IOU_THRESHOLDS,
    max_dets: int = MAX_DETS,
    area_range: tuple[float, float] = AREA_ALL,
) -> list[ClassMatches]:
    """Match all detections to ground truth as COCOeval does and pool them per class.

    Args:
        gt: the ground-truth table.
        dt: the detection table (image and category ids must be among ``image_ids`` and
            ``category_ids``; the caller validates this).
        image_ids: the evaluated image ids (COCOeval: every image of the ground truth).
        category_ids: the evaluated category ids, in the order of the output.
        iou_thrs: (T,) IoU thresholds; the first one defines ``ClassMatches.iou``.
        max_dets: detections kept per image and class (COCOeval's ``maxDets[-1]``).
        area_range: ``(min, max)`` area; "all" by default.

    Returns:
        One ``ClassMatches`` per entry of ``category_ids``, in that order.
    """
    num_thr = len(iou_thrs)
    gt_groups = _group(gt.category_id, gt.image_id)
    dt_groups = _group(dt.category_id, dt.image_id)
    empty = np.zeros(0, dtype=np.int64)
    wanted_images = set(int(i) for i in image_ids)
    per_class: dict[int, list[tuple]] = {int(c): [] for c in category_ids}
    for cat, img in sorted(set(gt_groups) | set(dt_groups), key=lambda k: (k[0], k[1])):
        if cat not in per_class or img not in wanted_images:
            continue
        per_class[cat].append(
            _match_pair(
                gt,
                gt_groups.get((cat, img), empty),
                dt,
                dt_groups.get((cat, img), empty),
                iou_thrs,
                max_dets,
                area_range,
            )
        )

    out = []
    for cat in category_ids:
        parts = per_class[int(cat)]
        if not parts:
            out.append(
                ClassMatches(
                    int(cat),
                    np.zeros(0),
                    np.zeros((num_thr, 0), bool),
                    np.zeros((num_thr, 0), bool),
                    np.zeros(0),
                    0,
                )
            )
            continue
        scores = np.concatenate([p[0] for p in parts])
        # Stable: ties keep image order, as COCOeval.accumulate's mergesort does.
        order = np.argsort(-scores, kind="mergesort")
        out.append(
            ClassMatches(
                category_id=int(cat),
                scores=scores[order],
                tp=np.concatenate([p[1] for p in parts], axis=1)[:, order],
                ignored=np.concatenate([p[2] for p in parts], axis=1)[:, order],
                iou=np.concatenate([p[3] for p in parts])[order],
                num_gt=sum(p[4] for p in parts),
            )
        )
    return out


def accumulate_precision(
    tp: np.ndarray, ignored: np.ndarray, num_gt: int, rec_thrs: np.ndarray = RECALL_THRESHOLDS
) -> np.ndarray:
    """Interpolated precision at each recall threshold, as ``COCOeval.accumulate``.

    Precision at recall r is the highest precision at any recall >= r (0 where r is never
    reached); a class without ground truth gets -1, which averages leave out.

    Args:
        tp: (T, N) bool, detections in score order (highest first).
        ignored: (T, N) bool, detections that are neither TP nor FP.
        num_gt: number of non-ignored ground truths.
        rec_thrs: (R,) recall thresholds.

    Returns:
        (T, R) float64.
    """
    num_thr, num_dt = tp.shape
    if num_gt == 0:
        return np.full((num_thr, len(rec_thrs)), -1.0)
    if num_dt == 0:
        return np.zeros((num_thr, len(rec_thrs)))
    tp_sum = np.cumsum(tp & ~ignored, axis=1).astype(float)
    fp_sum = np.cumsum(~tp & ~ignored, axis=1).astype(float)
    recall = tp_sum / num_gt
    # Same expression as COCOeval, so that the values agree to the last bit.
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((num_thr, len(rec_thrs)))
    for t in range(num_thr):
        idx = np.searchsorted(recall[t], rec_thrs, side="left")
        reached = idx < num_dt
        out[t, reached] = precision[t, idx[reached]]
    return out


def mean_precision(
    precision: np.ndarray, iou_thrs: np.ndarray = IOU_THRESHOLDS, iou: float | None = None
) -> float:
    """COCO's AP summary: the mean of a precision array over entries > -1.

    Args:
        precision: (T, R, K) float64 from ``accumulate_precision`` stacked over classes (or
            COCOeval's ``eval['precision'][..., area, maxdet]``).
        iou_thrs: (T,) the thresholds of the first axis.
        iou: one threshold (matched with ``np.isclose``, since 0.9 is not exact in
            ``np.linspace``), or None for the mean over all thresholds.

    Returns:
        The AP, or NaN when no entry is defined (no class has ground truth).
    """
    if iou is not None:
        rows = np.flatnonzero(np.isclose(iou_thrs, iou))
        if len(rows) != 1:
            raise ValueError(f"IoU threshold {iou} is not one of {np.round(iou_thrs, 2)}")
        precision = precision[rows]
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else float("nan")
