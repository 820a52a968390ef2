"""Data: COCO-format detection sets, the built-in synthetic shapes set, transforms, batching."""

from alrp_lab.data.coco import CocoDetection, coco_paths, load_coco_annotations
from alrp_lab.data.collate import collate_detection
from alrp_lab.data.shapes import SHAPE_CLASSES, ShapesSplits, build_shapes_dataset
from alrp_lab.data.transforms import (
    AUGMENTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    build_transforms,
)

# The `data` config group's choices (data.name): the built-in set and COCO-format folders.
DATASETS = ("shapes", "coco")

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "CocoDetection",
    "coco_paths",
    "load_coco_annotations",
    "collate_detection",
    "SHAPE_CLASSES",
    "ShapesSplits",
    "build_shapes_dataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "build_transforms",
]
