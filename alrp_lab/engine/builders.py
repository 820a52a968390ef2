"""Turn a validated config into data sets and a detector.

This is the one place where config keys meet constructors: everything below (models,
losses, ops, data) takes plain Python arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from alrp_lab.data.coco import CocoDetection, coco_paths
from alrp_lab.data.shapes import build_shapes_dataset
from alrp_lab.data.transforms import build_transforms
from alrp_lab.errors import DataError
from alrp_lab.models.faster_rcnn import build_faster_rcnn
from alrp_lab.models.foveabox import build_foveabox
from alrp_lab.models.retinanet import build_retinanet
from alrp_lab.pretrain import BUILTIN, builtin_weights, spec_from_config


def backbone_weights_path(cfg: DictConfig) -> str | None:
    """``backbone.weights`` as a file: ``builtin`` is the fractal-pretrained backbone of this
    architecture and ``pretrain`` node from the machine's cache, built first when missing."""
    if cfg.backbone.weights == BUILTIN:
        return str(builtin_weights(spec_from_config(cfg.backbone, cfg.pretrain)))
    return cfg.backbone.weights


def build_datasets(data: DictConfig, ctx: Any = None) -> tuple[CocoDetection, CocoDetection]:
    """(train, val) data sets for ``data`` (the ``data`` config node).

    The built-in set is generated on first use (rank 0 first under torchrun, so the
    others read a finished cache).
    """
    if data.name == "shapes":
        root = Path(data.root).expanduser()

        def make():
            return build_shapes_dataset(
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
        raise ValueError(f"unknown data set {data.name!r}: use data=shapes or data=coco")

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
    signature = {
        "detector": cfg.detector.name,
        "num_classes": int(num_classes),
        "depth": int(cfg.backbone.depth),
        "groups": int(cfg.backbone.groups),
        "width_per_group": int(cfg.backbone.width_per_group),
        "base_width": int(cfg.backbone.base_width),
        "fpn_channels": int(cfg.detector.fpn_channels),
        "head_convs": int(cfg.detector.head_convs),
        "head_channels": int(cfg.detector.head_channels),
        "octave_base_scale": float(cfg.detector.octave_base_scale),
        "scales_per_octave": int(cfg.detector.scales_per_octave),
        "assigner": cfg.assigner.name,
    }
    if cfg.detector.name == "faster_rcnn":
        signature.pop("assigner")
        signature["roi_fc_channels"] = int(cfg.detector.roi_fc_channels)
    if cfg.detector.name == "foveabox":
        # Anchors and the assigner group do not apply; the fovea settings do.
        for key in ("octave_base_scale", "scales_per_octave", "assigner"):
            signature.pop(key)
        signature.update(
            sigma=float(cfg.detector.sigma),
            strides=[int(s) for s in cfg.detector.strides],
            scale_ranges=[[float(v) for v in r] for r in cfg.detector.scale_ranges],
            base_edge_list=[float(b) for b in cfg.detector.base_edge_list],
        )
    return signature


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """The detector of ``cfg`` with its loss wired in."""
    det, bb, loss = cfg.detector, cfg.backbone, cfg.loss
    common: dict[str, Any] = dict(
        depth=bb.depth,
        groups=bb.groups,
        width_per_group=bb.width_per_group,
        base_width=bb.base_width,
        norm=bb.norm,
        frozen_stages=bb.frozen_stages,
        backbone_weights=backbone_weights_path(cfg),
        fpn_channels=det.fpn_channels,
        head_convs=det.head_convs,
        head_channels=det.head_channels,
        cls_loss=loss.name,
        box_error=cfg.box_error.name,
        tau=cfg.box_error.tau,
        smooth_l1_beta=cfg.box_error.beta,
        coord_reduction=cfg.box_error.coord_reduction,
        delta=loss.delta,
        interpolated=loss.interpolated,
        focal_alpha=loss.alpha,
        focal_gamma=loss.gamma,
        self_balance=loss.self_balance,
        sb_init=loss.sb_init,
        wr=loss.wr,
        score_thr=det.score_thr,
        nms_iou=det.nms_iou,
        pre_nms_topk=det.pre_nms_topk,
        max_per_img=det.max_per_img,
        track_grad_balance=cfg.train.grad_balance,
    )
    if det.name == "foveabox":
        return build_foveabox(
            num_classes,
            sigma=det.sigma,
            scale_ranges=det.scale_ranges,
            base_edge_list=det.base_edge_list,
            strides=det.strides,
            **common,
        )
    if det.name == "faster_rcnn":
        for key in ("focal_alpha", "focal_gamma", "interpolated"):
            common.pop(key)
        return build_faster_rcnn(
            num_classes,
            octave_base_scale=det.octave_base_scale,
            scales_per_octave=det.scales_per_octave,
            rpn_weight=det.rpn_weight,
            rpn_pos_iou=det.rpn_pos_iou,
            rpn_neg_iou=det.rpn_neg_iou,
            rpn_min_pos_iou=det.rpn_min_pos_iou,
            rpn_tau=det.rpn_tau,
            rpn_nms_iou=det.rpn_nms_iou,
            num_proposals=det.num_proposals,
            rpn_sample_size=det.rpn_sample_size,
            rpn_pos_fraction=det.rpn_pos_fraction,
            roi_fc_channels=det.roi_fc_channels,
            roi_sampling_ratio=det.roi_sampling_ratio,
            roi_canonical_scale=det.roi_canonical_scale,
            roi_pos_iou=det.roi_pos_iou,
            roi_sample_size=det.roi_sample_size,
            roi_pos_fraction=det.roi_pos_fraction,
            **common,
        )
    if det.name != "retinanet":
        raise ValueError(f"unknown detector {det.name!r}: use retinanet, foveabox, faster_rcnn")
    return build_retinanet(
        num_classes,
        octave_base_scale=det.octave_base_scale,
        scales_per_octave=det.scales_per_octave,
        assigner=cfg.assigner.name,
        atss_topk=cfg.assigner.topk,
        pos_iou=cfg.assigner.pos_iou,
        neg_iou=cfg.assigner.neg_iou,
        min_pos_iou=cfg.assigner.min_pos_iou,
        zero_target=loss.zero_target,
        **common,
    )
