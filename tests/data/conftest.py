"""A small COCO-format set written to tmp_path: PNG and JPEG images, crowd and degenerate
boxes, a box past the border, an image without annotations, non-contiguous category ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# Listed out of order on purpose: the data set must sort them (3, 7, 10 -> labels 0, 1, 2).
CATEGORIES = [{"id": 10, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}]


@dataclass
class CocoSet:
    image_dir: Path
    ann_file: Path
    data: dict[str, Any]
    pixels: dict[int, np.ndarray]  # image_id -> uint8 (H, W, 3) as written

    def write_ann(self, data: Any, name: str = "other.json") -> Path:
        """Write another annotation file beside the real one and return its path."""
        path = self.ann_file.with_name(name)
        path.write_text(json.dumps(data))
        return path


def _write_coco_set(root: Path) -> CocoSet:
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(1234)
    pixels = {
        1: rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8),
        2: np.full((24, 32, 3), 128, dtype=np.uint8),  # flat, so JPEG keeps it near exact
        3: rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8),
    }
    Image.fromarray(pixels[1]).save(image_dir / "a.png")
    Image.fromarray(pixels[2]).save(image_dir / "b.jpg", quality=95)
    Image.fromarray(pixels[3]).save(image_dir / "c.png")
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.jpg", "width": 32, "height": 24},
        {"id": 3, "file_name": "c.png", "width": 20, "height": 20},  # no annotations
    ]

    def ann(i: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict:
        return {
            "id": i,
            "image_id": image_id,
            "category_id": cat,
            "bbox": bbox,
            "area": bbox[2] * bbox[3],
            "iscrowd": crowd,
            "segmentation": [],
        }

    annotations = [
        ann(1, 1, 7, [2.0, 3.0, 10.0, 5.0]),  # -> label 1, xyxy (2, 3, 12, 8)
        ann(2, 1, 10, [20.5, 10.0, 4.5, 8.0]),  # -> label 2, xyxy (20.5, 10, 25, 18)
        ann(3, 1, 3, [0.0, 0.0, 40.0, 30.0], crowd=1),  # crowd: dropped by default
        ann(4, 2, 3, [30.0, 20.0, 8.0, 8.0]),  # past the border -> clipped (30, 20, 32, 24)
        ann(5, 2, 7, [5.0, 5.0, 0.5, 6.0]),  # degenerate (w < 1): dropped
    ]
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    ann_file = root / "annotations" / "instances_test.json"
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps(data))
    return CocoSet(image_dir, ann_file, data, pixels)


@pytest.fixture
def coco_set(tmp_path: Path) -> CocoSet:
    return _write_coco_set(tmp_path)
