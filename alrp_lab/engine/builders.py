"""Turn a validated config into data sets and a detector.

This is the one place where config keys meet constructors: everything below (models,
losses, ops, data) takes plain Python arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from alrp_lab.data import BUILTIN_DATASETS
from alrp_lab.data.coco import CocoDetection, coco_paths
from alrp_lab.data.transforms import build_transforms
from alrp_lab.errors import DataError
from alrp_lab.models import DETECTORS
from alrp_lab.pretrain import BUILTIN, builtin_weights, spec_from_config


def backbone_weights_path(cfg: DictConfig) -> str | None:
    """``backbone.weights`` as a file: ``builtin`` is the fractal-pretrained backbone of this
    architecture and ``pretrain`` node from the machine's cache, built first when missing."""
    if cfg.backbone.weights == BUILTIN:
        return str(builtin_weights(spec_from_config(cfg.backbone, cfg.pretrain)))
    return cfg.backbone.weights


def build_datasets(data: DictConfig, ctx: Any = None) -> tuple[CocoDetection, CocoDetection]:
    """(train, val) data sets for ``data`` (the ``data`` config node).

    A built-in set is generated on first use (rank 0 first under torchrun, so the
    others read a finished cache).
    """
    if data.name in BUILTIN_DATASETS:
        root = Path(data.root).expanduser()
        build = BUILTIN_DATASETS[data.name]

        def make():
            return build(
                root,
                seed=data.seed,
                num_train=data.num_train,
                num_val=data.num_val,
                image_size=data.image_size,
                num_classes=data.num_classes,
            )

        if ctx is not None and ctx.world_size > 1:
            if ctx.is_main:
                make()
            ctx.barrier()
        splits = make()
        train_dir, train_ann = splits.train_images, splits.train_ann
        val_dir, val_ann = splits.val_images, splits.val_ann
    elif data.name == "coco":
        root = Path(data.root).expanduser()
        train_dir, train_ann = coco_paths(root, data.train_split)
        val_dir, val_ann = coco_paths(root, data.val_split)
    else:  # the schema has already rejected other names
        raise ValueError(
            f"unknown data set {data.name!r}: use data=shapes, data=textures or data=coco"
        )

    train_set = CocoDetection(
        train_dir,
        train_ann,
        transforms=build_transforms(train=True, size=data.train_size, augment=data.augment),
    )
    val_set = CocoDetection(
        val_dir,
        val_ann,
        transforms=build_transforms(train=False, size=data.test_size, augment="none"),
    )
    if train_set.label_to_category_id != val_set.label_to_category_id:
        raise DataError(
            f"{train_ann} and {val_ann} list different categories: both splits must share "
            "one category list"
        )
    return train_set, val_set


def model_signature(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this run's model."""
    signature: dict[str, Any] = {
        "detector": cfg.detector.name,
        "num_classes": int(num_classes),
        "depth": int(cfg.backbone.depth),
        "groups": int(cfg.backbone.groups),
        "width_per_group": int(cfg.backbone.width_per_group),
        "base_width": int(cfg.backbone.base_width),
        "fpn_channels": int(cfg.detector.fpn_channels),
        "head_convs": int(cfg.detector.head_convs),
        "head_channels": int(cfg.detector.head_channels),
    }
    if cfg.detector.name == "foveabox":
        # No anchors and no assigner group: the fovea settings shape the model instead.
        signature.update(
            sigma=float(cfg.detector.sigma),
            strides=[int(s) for s in cfg.detector.strides],
            scale_ranges=[[float(v) for v in r] for r in cfg.detector.scale_ranges],
            base_edge_list=[float(b) for b in cfg.detector.base_edge_list],
        )
        return signature
    signature.update(
        octave_base_scale=float(cfg.detector.octave_base_scale),
        scales_per_octave=int(cfg.detector.scales_per_octave),
    )
    if cfg.detector.name == "faster_rcnn":
        signature["roi_fc_channels"] = int(cfg.detector.roi_fc_channels)
        # P2..P6 and P3..P7 have different FPN layers (a lateral conv more from C2).
        signature["min_level"] = int(cfg.detector.min_level)
    else:
        signature["assigner"] = cfg.assigner.name
    return signature


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """The detector of ``cfg`` with its loss wired in: its builder (``models.DETECTORS``)
    takes the config's sections whole, as their typed nodes (dataclass instances), with
    ``backbone.weights=builtin`` resolved to the cached file first."""
    backbone = dataclasses.replace(
        OmegaConf.to_object(cfg.backbone), weights=backbone_weights_path(cfg)
    )
    build = DETECTORS[cfg.detector.name].build  # the schema has checked the name
    return build(
        num_classes,
        backbone=backbone,
        detector=OmegaConf.to_object(cfg.detector),
        loss=OmegaConf.to_object(cfg.loss),
        box_error=OmegaConf.to_object(cfg.box_error),
        assigner=OmegaConf.to_object(cfg.assigner),
        track_grad_balance=cfg.train.grad_balance,
    )
