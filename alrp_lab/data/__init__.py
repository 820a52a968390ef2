"""Data: COCO-format detection sets, the built-in synthetic sets, transforms, batching."""

from alrp_lab.data.coco import CocoDetection, coco_paths, load_coco_annotations
from alrp_lab.data.collate import collate_detection
from alrp_lab.data.shapes import SHAPE_CLASSES, ShapesSplits, build_shapes_dataset
from alrp_lab.data.synthetic import SyntheticSplits
from alrp_lab.data.textures import TEXTURE_CLASSES, build_textures_dataset
from alrp_lab.data.transforms import (
    AUGMENTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    build_transforms,
)

# The built-in synthetic sets by data.name: each is generated into a cache folder on first
# use, and all take the same config keys (schema.DATA_KEYS).
BUILTIN_DATASETS = {"shapes": build_shapes_dataset, "textures": build_textures_dataset}
# The `data` config group's choices (data.name): the built-in sets and COCO-format folders.
DATASETS = (*BUILTIN_DATASETS, "coco")

__all__ = [
    "AUGMENTS",
    "BUILTIN_DATASETS",
    "DATASETS",
    "CocoDetection",
    "coco_paths",
    "load_coco_annotations",
    "collate_detection",
    "SHAPE_CLASSES",
    "ShapesSplits",
    "build_shapes_dataset",
    "SyntheticSplits",
    "TEXTURE_CLASSES",
    "build_textures_dataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "build_transforms",
]
