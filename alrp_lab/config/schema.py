"""Typed schema for a run's configuration.

Hydra composes the YAML tree under ``conf/``; :func:`validate_config` merges the result into
these dataclasses so a misspelt key or a value of the wrong type stops the run before any
work, with a message that names the key. Choices between implementations (``loss.name``,
``box_error.name`` ...) are names in the registries of :mod:`alrp_lab.engine.builders`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alrp_lab.assigners import ASSIGNERS
from alrp_lab.data import AUGMENTS, DATASETS
from alrp_lab.errors import ConfigError
from alrp_lab.losses import BOX_ERRORS, CLASSIFICATION_LOSSES
from alrp_lab.losses.box_error import COORD_REDUCTIONS
from alrp_lab.models import DETECTORS, NORMS
from alrp_lab.tracking.wandb_run import MODES as LOGGER_MODES

# backbone.weights of a config that must not run from random weights (conf/experiment/):
# OmegaConf's "???" would be ignored when merged over the backbone group's null.
REQUIRED = "required"


@dataclass
class DetectorConfig:
    name: str = "retinanet"
    fpn_channels: int = 256
    head_convs: int = 4
    head_channels: int = 256
    octave_base_scale: float = 4.0
    scales_per_octave: int = 2
    score_thr: float = 0.05
    nms_iou: float = 0.5
    pre_nms_topk: int = 1000
    max_per_img: int = 100
    # FoveaBox only (detector=foveabox); the paper's values. list[Any]: OmegaConf rejects
    # ints inside a list[list[float]] (e.g. [[1, 64]]); build_foveabox validates them.
    sigma: float = 0.4
    strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    scale_ranges: list[Any] = field(
        default_factory=lambda: [[1, 64], [32, 128], [64, 256], [128, 512], [256, 2048]]
    )
    base_edge_list: list[float] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    # Faster R-CNN only (detector=faster_rcnn); SPEC section 4. rpn_weight None: 0.2 for aLRP,
    # 1 for cross entropy.
    rpn_weight: float | None = None
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_tau: float = 0.7
    rpn_nms_iou: float = 0.7
    num_proposals: int = 1000
    rpn_sample_size: int = 256
    rpn_pos_fraction: float = 0.5
    roi_fc_channels: int = 1024
    roi_sampling_ratio: int = 0
    roi_canonical_scale: float = 224.0
    roi_pos_iou: float = 0.5
    roi_sample_size: int = 512
    roi_pos_fraction: float = 0.25


@dataclass
class BackboneConfig:
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    base_width: int = 64
    norm: str = "bn"
    frozen_stages: int = -1
    weights: str | None = None


@dataclass
class LossConfig:
    name: str = "alrp"
    delta: float = 1.0
    self_balance: bool = True
    sb_init: float = 50.0
    # Iterations between SB re-estimates; null: once per epoch (Section 4.2).
    sb_period: int | None = None
    # First iteration whose losses SB records; null: 0. Until the first period after it
    # ends, SB keeps sb_init.
    sb_start: int | None = None
    wr: float | None = None
    alpha: float = 0.25
    gamma: float = 2.0
    # Appendix G.3 / Figure A.7: a positive's target 0 instead of Eq. 12's (training diverges).
    zero_target: bool = False
    # AP Loss only: the interpolated precision of the authors' code instead of SPEC's plain form.
    interpolated: bool = False
    # The authors' learning rate for this loss and the batch it was set for: the lr rule
    # (train.lr=null) scales it to this run's batch, times train.lr_scale.
    ref_lr: float | None = None
    ref_batch: int | None = None


@dataclass
class BoxErrorConfig:
    name: str = "giou"
    tau: float = 0.5
    beta: float = 1.0
    # smooth_l1 / l1: sum the 4 coordinates' errors, or average them ("mean", the authors'
    # AP Loss heads).
    coord_reduction: str = "sum"


@dataclass
class AssignerConfig:
    name: str = "atss"
    topk: int = 9
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    min_pos_iou: float = 0.0


@dataclass
class DataConfig:
    name: str = "shapes"
    root: str = MISSING
    seed: int = 0
    num_train: int = 1200
    num_val: int = 200
    image_size: int = 128
    num_classes: int = 6
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_size: int = 128
    test_size: int = 128
    augment: str = "flip"
    num_workers: int = 0


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8
    # null: the lr rule, loss.ref_lr x (batch_size x nproc_per_node) / loss.ref_batch x lr_scale.
    lr: float | None = None
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 1e-3
    lr_steps: list[int] = field(default_factory=lambda: [9, 11])
    lr_decay: float = 0.1
    # Clip the global gradient norm at this value (mmdetection's RetinaNet uses 35); null: off.
    grad_clip: float | None = None
    max_iters_per_epoch: int | None = None
    device: str = "auto"
    # Processes on this machine; > 1 launches torchrun (one per GPU, or CPU processes on gloo).
    nproc_per_node: int = 1
    resume: bool = False
    log_every: int = 10
    grad_balance: bool = True
    eval_every: int = 0
    # Add Table 5's upper and lower bounds (upper_*/lower_* metrics) to the evaluation.
    eval_bounds: bool = False


@dataclass
class PretrainConfig:
    """The built-in backbone's pretraining (``backbone.weights=builtin``); see
    :class:`alrp_lab.pretrain.PretrainSpec` (which adds the architecture from ``backbone``)."""

    num_classes: int = 64
    instances: int = 160
    image_size: int = 64
    iterations: int = 1600
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: str = "offline"
    project: str = "alrp-lab"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    box_error: BoxErrorConfig = field(default_factory=BoxErrorConfig)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: Any = None
    seed: int = 0
    name: str = "run"


# Every choice comes from the registry of the layer that implements it.
_CHOICES = {
    "loss.name": tuple(CLASSIFICATION_LOSSES),
    "box_error.name": tuple(BOX_ERRORS),
    "box_error.coord_reduction": COORD_REDUCTIONS,
    "assigner.name": tuple(ASSIGNERS),
    "detector.name": tuple(DETECTORS),
    "data.name": DATASETS,
    "data.augment": AUGMENTS,
    "backbone.norm": NORMS,
    "logger.mode": LOGGER_MODES,
}


def _check_semantics(cfg: DictConfig) -> None:
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    if cfg.loss.self_balance and cfg.loss.wr is not None and cfg.loss.name == "alrp":
        raise ConfigError(
            f"loss.wr={cfg.loss.wr} is a constant weight and needs self-balance off: "
            "add loss.self_balance=false (or drop loss.wr)"
        )
    if not cfg.loss.self_balance and cfg.loss.wr is None:
        raise ConfigError("loss.self_balance=false needs a constant weight: set loss.wr=<value>")
    if cfg.loss.name == "alrp" and cfg.box_error.name not in ("iou", "giou"):
        raise ConfigError(
            f"aLRP Loss ranks by an IoU-based error; box_error={cfg.box_error.name} is for the "
            "baselines: use box_error=giou or box_error=iou"
        )
    if cfg.detector.name == "faster_rcnn" and cfg.loss.name not in ("alrp", "ce"):
        raise ConfigError(
            f"detector=faster_rcnn trains with loss=alrp or loss=ce (Table 8), not {cfg.loss.name}"
        )
    if cfg.loss.zero_target and (cfg.loss.name != "alrp" or cfg.detector.name != "retinanet"):
        raise ConfigError("loss.zero_target=true is an aLRP ablation for detector=retinanet")
    if cfg.loss.sb_init <= 0:
        raise ConfigError(f"loss.sb_init must be positive, got {cfg.loss.sb_init}")
    if cfg.loss.sb_period is not None and cfg.loss.sb_period < 1:
        raise ConfigError(
            f"loss.sb_period must be at least 1 or null (once per epoch), got {cfg.loss.sb_period}"
        )
    if cfg.loss.interpolated and cfg.loss.name != "ap":
        raise ConfigError(
            f"loss.interpolated=true is an AP Loss option; loss={cfg.loss.name} has no precision "
            "to interpolate: drop it or use loss=ap"
        )
    if cfg.loss.sb_start is not None and cfg.loss.sb_start < 0:
        raise ConfigError(f"loss.sb_start must be at least 0 or null, got {cfg.loss.sb_start}")
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be positive or null, got {cfg.train.grad_clip}")
    if cfg.train.nproc_per_node < 1:
        raise ConfigError(
            f"train.nproc_per_node must be at least 1, got {cfg.train.nproc_per_node}"
        )
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be at least 1")
    cap = cfg.train.max_iters_per_epoch
    if cap is not None and cap < 1:
        raise ConfigError(
            f"train.max_iters_per_epoch must be at least 1 or null (the whole epoch), got {cap}"
        )
    if cfg.backbone.weights == REQUIRED:
        raise ConfigError(
            "this experiment starts from pretrained weights: add "
            "backbone.weights=/path/to/file.pth (a local torchvision-format state dict), or "
            "backbone.weights=builtin"
        )
    if cfg.data.name == "coco" and OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError("data=coco needs the COCO folder: add data.root=/path/to/coco")


def validate_config(cfg: DictConfig | dict) -> DictConfig:
    """Merge a composed config into :class:`RunConfig` and check its values.

    Returns the typed, resolved config (without the ``hydra`` node). Raises
    :class:`ConfigError` with a one-line message naming the offending key.
    """
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    plain = {k: v for k, v in dict(plain).items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        where = f" (key: {key})" if key else ""
        raise ConfigError(f"invalid config{where}: {reason}") from None
    _check_semantics(merged)
    _apply_lr_rule(merged)
    return merged


def _apply_lr_rule(cfg: DictConfig) -> None:
    """Fill ``train.lr`` when it is null: the authors' lr for this loss, scaled linearly from
    their batch to this run's global batch, times ``train.lr_scale`` (one factor for a
    schedule shorter than theirs). The resolved config records the number used."""
    if cfg.train.lr_scale <= 0:
        raise ConfigError(f"train.lr_scale must be positive, got {cfg.train.lr_scale}")
    if cfg.train.lr is not None:
        if cfg.train.lr <= 0:
            raise ConfigError(
                f"train.lr must be positive or null (the lr rule), got {cfg.train.lr}"
            )
        return
    if cfg.loss.ref_lr is None or cfg.loss.ref_batch is None:
        raise ConfigError(
            f"train.lr=null asks for the lr rule, but loss={cfg.loss.name} has no reference: "
            "set loss.ref_lr and loss.ref_batch (the authors' lr and batch), or give train.lr"
        )
    if cfg.loss.ref_lr <= 0 or cfg.loss.ref_batch < 1:
        raise ConfigError(
            f"loss.ref_lr must be positive and loss.ref_batch at least 1, got "
            f"{cfg.loss.ref_lr} and {cfg.loss.ref_batch}"
        )
    cfg.train.lr = lr_rule(
        cfg.loss.ref_lr,
        cfg.loss.ref_batch,
        cfg.train.batch_size * cfg.train.nproc_per_node,
        cfg.train.lr_scale,
    )


def lr_rule(ref_lr: float, ref_batch: int, batch: int, scale: float = 1.0) -> float:
    """The linear scaling rule: ``ref_lr * batch / ref_batch * scale``."""
    return float(ref_lr) * batch / ref_batch * float(scale)
