"""Parts every detector factory builds the same way: backbone + FPN, box error, loss weight.

``build_retinanet``, ``build_foveabox`` and ``build_faster_rcnn`` take the same backbone,
box-error and weighting arguments; these helpers turn them into modules once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alrp_lab.losses import BoxError, SelfBalance, build_box_error
from alrp_lab.models.backbone import ResNet
from alrp_lab.models.fpn import FPN
from alrp_lab.models.weights import load_backbone_weights

__all__ = ["build_backbone_fpn", "build_detector_box_error", "build_loc_weight"]


def build_backbone_fpn(
    *,
    depth: int,
    groups: int,
    width_per_group: int,
    base_width: int,
    norm: str,
    frozen_stages: int,
    backbone_weights: str | Path | None,
    fpn_channels: int,
    num_outs: int,
    fpn_extra: str,
) -> tuple[ResNet, FPN]:
    """A ResNet/ResNeXt (weights from a local file when given) and its FPN of ``num_outs``
    levels from C3."""
    backbone = ResNet(
        depth,
        groups=groups,
        width_per_group=width_per_group,
        norm=norm,
        frozen_stages=frozen_stages,
        base_width=base_width,
    )
    if backbone_weights is not None:
        load_backbone_weights(backbone, backbone_weights)
    fpn = FPN(backbone.out_channels, fpn_channels, num_outs=num_outs, extra=fpn_extra)
    return backbone, fpn


def build_detector_box_error(
    name: str, *, tau: float, smooth_l1_beta: float, coord_reduction: str = "sum"
) -> BoxError:
    """The box error ``name`` with the parameters it takes (tau; beta and coord_reduction)."""
    if name in ("iou", "giou"):
        return build_box_error(name, tau=tau)
    if name == "smooth_l1":
        return build_box_error(name, beta=smooth_l1_beta, coord_reduction=coord_reduction)
    return build_box_error(name, coord_reduction=coord_reduction)


def build_loc_weight(*, self_balance: bool, sb_init: float, wr: float | None) -> SelfBalance:
    """SB starting at ``sb_init``, or (``self_balance=False``) the constant weight ``wr``
    (1 when None) as a disabled SB, so checkpoints save either the same way."""
    if self_balance:
        return SelfBalance(init=sb_init, enabled=True)
    return SelfBalance(init=1.0 if wr is None else wr, enabled=False)


def shared_arguments(
    backbone: Any, detector: Any, loss: Any, box_error: Any, track_grad_balance: bool
) -> dict[str, Any]:
    """The ``assemble_*`` arguments every detector takes from its config sections, read by
    their YAML keys (the builders add their own detector's keys)."""
    return dict(
        depth=backbone.depth,
        groups=backbone.groups,
        width_per_group=backbone.width_per_group,
        base_width=backbone.base_width,
        norm=backbone.norm,
        frozen_stages=backbone.frozen_stages,
        backbone_weights=backbone.weights,
        fpn_channels=detector.fpn_channels,
        head_convs=detector.head_convs,
        head_channels=detector.head_channels,
        cls_loss=loss.name,
        box_error=box_error.name,
        tau=box_error.tau,
        smooth_l1_beta=box_error.beta,
        coord_reduction=box_error.coord_reduction,
        delta=loss.delta,
        sb_init=loss.sb_init,
        self_balance=loss.self_balance,
        wr=loss.wr,
        score_thr=detector.score_thr,
        nms_iou=detector.nms_iou,
        max_per_img=detector.max_per_img,
        track_grad_balance=track_grad_balance,
    )
