"""What every detector builder shares: its config nodes' common keys, backbone + FPN, the box
error, the assigner and the localisation weight, each built from a config node whole.

A builder takes the sections of ``conf/`` (``backbone``, ``detector``, ``loss``,
``box_error``, ``assigner``: the validated nodes, or any objects with those attributes) and
reads every key by its YAML name. A choice's own options (``box_error.beta``,
``assigner.topk``, ``loss.alpha`` ...) reach the constructor they set under that name, by
unpacking the node: there is no second name and no second default here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from alrp_lab.assigners import ASSIGNERS
from alrp_lab.losses import BoxError, SelfBalance, build_box_error
from alrp_lab.models.backbone import ResNet
from alrp_lab.models.fpn import FPN
from alrp_lab.models.weights import load_backbone_weights

__all__ = [
    "BackboneConfig",
    "DetectorConfig",
    "LOSS_COMMON_KEYS",
    "LossConfig",
    "build_assigner",
    "build_backbone_fpn",
    "build_detector_box_error",
    "build_loc_weight",
    "classifier_options",
    "options",
]


@dataclass
class BackboneConfig:
    """``conf/backbone/*.yaml``: a ResNet/ResNeXt and where its weights come from."""

    depth: int
    groups: int
    width_per_group: int
    # Stem width: 64 is torchvision's ResNet (needed to load its weights).
    base_width: int
    norm: str
    frozen_stages: int
    # A local torchvision-format file, None (random), or "builtin"/"required" (config layer).
    weights: str | None


@dataclass
class LossConfig:
    """The keys every loss of ``conf/loss/*.yaml`` has: the localisation weight and the lr
    rule's reference; each loss's node (``config.schema``) adds its classifier's options."""

    name: str
    self_balance: bool
    sb_init: float
    # Iterations between SB re-estimates; null: once per epoch (Section 4.2).
    sb_period: int | None
    # First iteration whose losses SB records; null: 0. Until the first period after it
    # ends, SB keeps sb_init.
    sb_start: int | None
    wr: float | None
    # The authors' learning rate for this loss and the batch it was set for: the lr rule
    # (train.lr=null) scales it to this run's batch, times train.lr_scale.
    ref_lr: float | None
    ref_batch: int | None


# The rest of a loss's node are its classifier's own options.
LOSS_COMMON_KEYS = frozenset(f.name for f in fields(LossConfig))


@dataclass
class DetectorConfig:
    """The keys of ``conf/detector/*.yaml`` every detector has; each detector's node adds its
    own (``RetinaNetConfig``, ``FoveaBoxConfig``, ``FasterRCNNConfig``)."""

    name: str
    fpn_channels: int
    head_convs: int
    head_channels: int
    # Post-processing, SPEC section 4.
    score_thr: float
    nms_iou: float
    pre_nms_topk: int
    max_per_img: int


def options(node: Any, exclude: Iterable[str] = ("name",)) -> dict[str, Any]:
    """A config node's keys and values as keyword arguments, without ``exclude``.

    ``node`` is a dataclass instance (``OmegaConf.to_object`` of a section) or a mapping
    (a DictConfig); each value is read by attribute, under its YAML key."""
    skip = set(exclude)
    keys = [f.name for f in fields(node)] if is_dataclass(node) else list(node.keys())
    return {key: getattr(node, key) for key in keys if key not in skip}


def classifier_options(loss: Any) -> dict[str, Any]:
    """The loss node's options for its classifier (``delta``; ``alpha``, ``gamma``;
    ``interpolated``; ``zero_target``): every key but the shared ones."""
    return options(loss, exclude=LOSS_COMMON_KEYS)


def build_backbone_fpn(
    backbone: BackboneConfig,
    *,
    fpn_channels: int,
    num_outs: int,
    fpn_extra: str,
    with_c2: bool = False,
) -> tuple[ResNet, FPN]:
    """The ``backbone`` node's ResNet/ResNeXt (weights from a local file when given) and its
    FPN of ``num_outs`` levels from C3 (from C2 ``with_c2``)."""
    net = ResNet(
        backbone.depth,
        groups=backbone.groups,
        width_per_group=backbone.width_per_group,
        norm=backbone.norm,
        frozen_stages=backbone.frozen_stages,
        base_width=backbone.base_width,
        with_c2=with_c2,
    )
    if backbone.weights is not None:
        load_backbone_weights(net, backbone.weights)
    fpn = FPN(net.out_channels, fpn_channels, num_outs=num_outs, extra=fpn_extra)
    return net, fpn


def build_detector_box_error(box_error: Any, **override: Any) -> BoxError:
    """The ``box_error`` node's error with its own options (tau; beta, coord_reduction);
    ``override`` replaces some (Faster R-CNN's RPN takes ``tau=detector.rpn_tau``)."""
    return build_box_error(box_error.name, **{**options(box_error), **override})


def build_assigner(assigner: Any) -> Any:
    """The ``assigner`` node's assigner (``ASSIGNERS``) with its own options."""
    return ASSIGNERS[assigner.name](**options(assigner))


def build_loc_weight(loss: Any) -> SelfBalance:
    """SB starting at ``loss.sb_init``, or (``loss.self_balance`` false) the constant weight
    ``loss.wr`` as a disabled SB, so checkpoints save either the same way."""
    if loss.self_balance:
        return SelfBalance(init=loss.sb_init, enabled=True)
    return SelfBalance(init=1.0 if loss.wr is None else loss.wr, enabled=False)
