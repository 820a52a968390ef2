"""Data: COCO-format detection sets, the built-in synthetic shapes set, transforms, batching."""

from alrp_lab.data.coco import CocoDetection, coco_paths, load_coco_annotations
from alrp_lab.data.collate import collate_detection
from alrp_lab.data.shapes import SHAPE_CLASSES, ShapesSplits, build_shapes_dataset
from alrp_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Compose, build_transforms

__all__ = [
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
