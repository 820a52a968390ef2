"""Small COCO-format data sets for the evaluation tests.

``hand_case``: one image, two 100x100 ground truths A = [0, 0, 100, 100] and
B = [200, 0, 100, 100] (area 10000: "large"), three detections:

    d1 score 0.9 [0, 0, 100, 72]      IoU 0.72 with A
    d2 score 0.8 [500, 500, 100, 100] IoU 0 (FP)
    d3 score 0.7 [200, 0, 100, 58]    IoU 0.58 with B

``reverse=True`` swaps the two heights (d1 IoU 0.58, d3 IoU 0.72). The expected values are
worked out in the tests that use it.

``random_case(seed)``: a few images (some without ground truth), three categories with
non-contiguous ids (one never annotated), crowd regions, jittered boxes, exact duplicate
detections (unless ``duplicates=False``), optional score ties and optionally one image with
more than 100 detections.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

CATEGORY_IDS = (1, 3, 7)  # 7 is never annotated


def make_coco(dataset: dict) -> COCO:
    """A pycocotools COCO built in memory, without its printing."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_dataset(images: list[int], annotations: list[dict], categories=CATEGORY_IDS) -> dict:
    """A COCO annotation dict; annotations get ids 1..N, area w*h and iscrowd 0 by default."""
    anns = []
    for i, a in enumerate(annotations, start=1):
        w, h = a["bbox"][2], a["bbox"][3]
        anns.append({"id": i, "area": w * h, "iscrowd": 0, **a})
    return {
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in images],
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }


def _hand_case(reverse: bool = False) -> tuple[dict, list[dict]]:
    gt = gt_dataset(
        [1],
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100]},
            {"image_id": 1, "category_id": 1, "bbox": [200, 0, 100, 100]},
        ],
        categories=(1,),
    )
    h1, h3 = (58, 72) if reverse else (72, 58)
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, h1], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [500, 500, 100, 100], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [200, 0, 100, h3], "score": 0.7},
    ]
    return gt, dets


@pytest.fixture
def hand_case():
    """Factory: ``hand_case(reverse=False) -> (gt dataset dict, detections)``."""
    return _hand_case


def _random_box(rng: np.random.Generator, lo: float = 8, hi: float = 60) -> list[float]:
    w, h = rng.uniform(lo, hi, size=2)
    x, y = rng.uniform(0, 200, size=2)
    return [float(x), float(y), float(w), float(h)]


def _jitter(rng: np.random.Generator, box: list[float], scale: float) -> list[float]:
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, scale, size=4)
    return [x + dx * w, y + dy * h, max(1.0, w * (1 + dw)), max(1.0, h * (1 + dh))]


def _random_case(
    seed: int,
    num_images: int = 8,
    tie_scores: bool = False,
    crowded_image: bool = False,
    duplicates: bool = True,
) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [3 * i + 2 for i in range(num_images)]  # non-contiguous ids, not sorted by file
    images = list(rng.permutation(images).tolist())
    annotations, dets = [], []
    for img in images:
        num_gt = 0 if rng.random() < 0.25 else int(rng.integers(1, 6))
        for _ in range(num_gt):
            cat = int(rng.choice(CATEGORY_IDS[:2]))
            crowd = rng.random() < 0.15
            box = _random_box(rng, 40, 120) if crowd else _random_box(rng)
            annotations.append(
                {"image_id": img, "category_id": cat, "bbox": box, "iscrowd": int(crowd)}
            )
            for _ in range(int(rng.integers(0, 3 if duplicates else 2))):
                det_cat = cat if rng.random() < 0.9 else int(rng.choice(CATEGORY_IDS))
                dets.append(
                    {
                        "image_id": img,
                        "category_id": det_cat,
                        "bbox": _jitter(rng, box, rng.uniform(0.02, 0.25)),
                        "score": float(rng.random()),
                    }
                )
        for _ in range(int(rng.integers(0, 4))):  # background false positives
            dets.append(
                {
                    "image_id": img,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": _random_box(rng),
                    "score": float(rng.random()),
                }
            )
    for d in list(dets):
        if duplicates and rng.random() < 0.1:  # exact duplicates, sometimes with another score
            dup = dict(d, bbox=list(d["bbox"]))
            if rng.random() < 0.5:
                dup["score"] = float(rng.random())
            dets.append(dup)
    if crowded_image and annotations:  # > 100 detections of one class in one image
        ann = annotations[0]
        for _ in range(104):
            dets.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": _jitter(rng, ann["bbox"], 0.1),
                    "score": float(rng.random()),
                }
            )
    if tie_scores:
        for d in dets:
            d["score"] = round(d["score"], 1)
    order = rng.permutation(len(dets))
    return gt_dataset(images, annotations), [dets[i] for i in order]


@pytest.fixture
def random_case():
    """Factory: ``random_case(seed, num_images=8, tie_scores=False, crowded_image=False,
    duplicates=True)``; ``duplicates=False`` gives each ground truth at most one detection."""
    return _random_case
