"""Typed schema for a run's configuration.

Hydra composes the YAML tree under ``conf/``; :func:`validate_config` merges the result into
these dataclasses so a misspelt key or a value of the wrong type stops the run before any
work, with a message that names the key. The values themselves live in the YAML only: the
nodes here hold keys and types. Choices between implementations (``detector.name``,
``loss.name``, ``box_error.name`` ...) are the keys of the registries of the layers that
implement them, and each choice has a node of its own keys (``CHOICE_NODES``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from alrp_lab.assigners import ASSIGNERS
from alrp_lab.data import AUGMENTS, BUILTIN_DATASETS, DATASETS
from alrp_lab.engine.amp import AMP_MODES
from alrp_lab.errors import ConfigError
from alrp_lab.losses import BOX_ERRORS, CLASSIFICATION_LOSSES
from alrp_lab.losses.box_error import COORD_REDUCTIONS
from alrp_lab.models import DETECTORS, NORMS, BackboneConfig
from alrp_lab.models.parts import LossConfig
from alrp_lab.pretrain.train import PretrainConfig
from alrp_lab.tracking.wandb_run import MODES as LOGGER_MODES

# backbone.weights of a config that must not run from random weights (conf/experiment/):
# OmegaConf's "???" would be ignored when merged over the backbone group's null.
REQUIRED = "required"


# Every value of a run comes from the YAML of conf/ (and the command line): the dataclasses
# below hold the keys and their types, no defaults. A section with choices (detector, loss,
# box_error, assigner) has one node per choice, holding only the keys that choice reads, so
# `loss.alpha=0.5` with loss=alrp is an error rather than a silent no-op.


@dataclass
class ALRPLossConfig(LossConfig):
    # Smoothing of the step function (SPEC section 1).
    delta: float = MISSING
    # Appendix G.3 / Figure A.7: a positive's target 0 instead of Eq. 12's (training diverges).
    zero_target: bool = MISSING
    # Under torchrun: rank the whole global batch, not each process's share (the authors').
    global_rank: bool = MISSING


@dataclass
class APLossConfig(LossConfig):
    delta: float = MISSING
    # The interpolated precision of the authors' code instead of SPEC's plain form.
    interpolated: bool = MISSING
    global_rank: bool = MISSING


@dataclass
class FocalLossConfig(LossConfig):
    alpha: float = MISSING
    gamma: float = MISSING


@dataclass
class CELossConfig(LossConfig):
    pass


@dataclass
class BoxErrorConfig:
    name: str = MISSING


@dataclass
class IoUErrorConfig(BoxErrorConfig):
    # Positive-IoU threshold of the localisation error's normalisation (SPEC section 1).
    tau: float = MISSING


@dataclass
class L1ErrorConfig(BoxErrorConfig):
    # Sum the 4 coordinates' errors, or average them ("mean", the authors' AP Loss heads).
    coord_reduction: str = MISSING


@dataclass
class SmoothL1ErrorConfig(L1ErrorConfig):
    beta: float = MISSING


@dataclass
class AssignerConfig:
    name: str = MISSING


@dataclass
class ATSSConfig(AssignerConfig):
    topk: int = MISSING


@dataclass
class MaxIoUConfig(AssignerConfig):
    pos_iou: float = MISSING
    neg_iou: float = MISSING
    min_pos_iou: float = MISSING


@dataclass
class DataConfig:
    """One node for both data sets: ``debug=smoke`` sizes the built-in set whatever the
    choice. The keys only one data set reads are null for the other (``DATA_KEYS``)."""

    name: str = MISSING
    root: str = MISSING
    train_size: int = MISSING
    test_size: int = MISSING
    augment: str = MISSING
    num_workers: int = MISSING
    # The built-in sets only (data=shapes, data=textures).
    seed: int | None = None
    num_train: int | None = None
    num_val: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    # data=coco only.
    train_split: str | None = None
    val_split: str | None = None


_DATA_COMMON = ("name", "root", "train_size", "test_size", "augment", "num_workers")
_BUILTIN_KEYS = (*_DATA_COMMON, "seed", "num_train", "num_val", "image_size", "num_classes")
# The keys each data set reads.
DATA_KEYS = {
    **dict.fromkeys(BUILTIN_DATASETS, _BUILTIN_KEYS),
    "coco": (*_DATA_COMMON, "train_split", "val_split"),
}


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    # null: the lr rule, loss.ref_lr x (batch_size x nproc_per_node x nnodes) / loss.ref_batch
    # x lr_scale.
    lr: float | None = MISSING
    lr_scale: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    warmup_iters: int = MISSING
    warmup_ratio: float = MISSING
    lr_steps: list[int] = MISSING
    lr_decay: float = MISSING
    # Clip the global gradient norm at this value (mmdetection's RetinaNet uses 35); null: off.
    grad_clip: float | None = MISSING
    max_iters_per_epoch: int | None = MISSING
    device: str = MISSING
    # Processes on this machine; > 1 launches torchrun (one per GPU, or CPU processes on gloo).
    nproc_per_node: int = MISSING
    # Machines the run spans (torchrun's --nnodes); every process checks that WORLD_SIZE is
    # nproc_per_node x nnodes, which the lr rule and the recorded config count on.
    nnodes: int = MISSING
    resume: bool = MISSING
    log_every: int = MISSING
    grad_balance: bool = MISSING
    eval_every: int = MISSING
    # Add Table 5's upper and lower bounds (upper_*/lower_* metrics) to the evaluation.
    eval_bounds: bool = MISSING
    # Mixed precision on CUDA: bf16, or fp16 with a gradient scaler; null: off.
    amp: str | None = MISSING
    # 4-D weights and images in channels-last (NHWC) memory: faster convolutions on CPU.
    channels_last: bool = MISSING


@dataclass
class LoggerConfig:
    name: str = MISSING
    mode: str = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    group: str | None = MISSING
    tags: list[str] = MISSING


@dataclass
class RunConfig:
    """A run's sections; each is typed by its node in validate_config (``SECTION_NODES``, or
    for a section with choices the chosen one's node in ``CHOICE_NODES``)."""

    detector: Any = None
    backbone: Any = None
    loss: Any = None
    box_error: Any = None
    assigner: Any = None
    data: Any = None
    train: Any = None
    pretrain: Any = None
    logger: Any = None
    experiment: Any = None
    seed: int = MISSING
    name: str = MISSING


# The node of each section without choices.
SECTION_NODES: dict[str, type] = {
    "backbone": BackboneConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "pretrain": PretrainConfig,
    "logger": LoggerConfig,
}

# The typed node of each choice of a section, keyed like the registry of the layer that
# implements the choices (tests/config/test_schema.py checks the keys agree).
CHOICE_NODES: dict[str, dict[str, type]] = {
    "detector": {name: entry.config for name, entry in DETECTORS.items()},
    "loss": {
        "alrp": ALRPLossConfig,
        "ap": APLossConfig,
        "focal": FocalLossConfig,
        "ce": CELossConfig,
    },
    "box_error": {
        "iou": IoUErrorConfig,
        "giou": IoUErrorConfig,
        "smooth_l1": SmoothL1ErrorConfig,
        "l1": L1ErrorConfig,
    },
    "assigner": {"atss": ATSSConfig, "max_iou": MaxIoUConfig},
}


def section_keys(section: str, name: str) -> tuple[str, ...] | None:
    """The keys the choice ``name`` of ``section`` reads (None: a section without choices or
    an unknown name)."""
    if section == "data":
        return DATA_KEYS.get(name)
    node = CHOICE_NODES.get(section, {}).get(name)
    return None if node is None else tuple(f.name for f in fields(node))


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
    "train.amp": tuple(AMP_MODES),
}
# Keys of _CHOICES whose null means "off".
_NULLABLE = frozenset({"train.amp"})


_ABSENT = object()


def _check_semantics(cfg: DictConfig) -> None:
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # a key of some choices only (box_error.coord_reduction)
            continue
        if value is None and key in _NULLABLE:
            continue
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
    if cfg.loss.get("global_rank") and cfg.detector.name not in ("retinanet", "foveabox"):
        raise ConfigError(
            f"loss.global_rank=true is for the one-stage detectors (retinanet, foveabox); "
            f"detector={cfg.detector.name} ranks each process's share"
        )
    if cfg.loss.name == "alrp" and cfg.loss.zero_target and cfg.detector.name != "retinanet":
        raise ConfigError("loss.zero_target=true is an aLRP ablation for detector=retinanet")
    if cfg.loss.sb_init <= 0:
        raise ConfigError(f"loss.sb_init must be positive, got {cfg.loss.sb_init}")
    if cfg.loss.sb_period is not None and cfg.loss.sb_period < 1:
        raise ConfigError(
            f"loss.sb_period must be at least 1 or null (once per epoch), got {cfg.loss.sb_period}"
        )
    if cfg.loss.sb_start is not None and cfg.loss.sb_start < 0:
        raise ConfigError(f"loss.sb_start must be at least 0 or null, got {cfg.loss.sb_start}")
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be positive or null, got {cfg.train.grad_clip}")
    if cfg.train.nproc_per_node < 1 or cfg.train.nnodes < 1:
        raise ConfigError(
            f"train.nproc_per_node and train.nnodes must be at least 1, got "
            f"{cfg.train.nproc_per_node} and {cfg.train.nnodes}"
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


def _typed_base(plain: dict[str, Any]) -> DictConfig:
    """:class:`RunConfig` with each section that has choices typed by its chosen node."""
    base = OmegaConf.structured(RunConfig)
    for section, node in SECTION_NODES.items():
        base[section] = OmegaConf.structured(node)
    for section, nodes in CHOICE_NODES.items():
        name = (plain.get(section) or {}).get("name")
        if name not in nodes:
            raise ConfigError(
                f"{section}.name={name!r} is not one of {', '.join(nodes)}: pick one with "
                f"{section}=NAME"
            )
        base[section] = OmegaConf.structured(nodes[name])
    return base


def validate_config(cfg: DictConfig | dict) -> DictConfig:
    """Merge a composed config into :class:`RunConfig` and check its values.

    Every value comes from the composed YAML: a key the chosen node lacks, a value of the
    wrong type and a key left without a value are errors. Returns the typed, resolved
    config (without the ``hydra`` node). Raises :class:`ConfigError` with a one-line message
    naming the offending key.
    """
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    plain = {k: v for k, v in dict(plain).items() if k != "hydra"}
    base = _typed_base(plain)
    try:
        merged = OmegaConf.merge(base, plain)
        OmegaConf.resolve(merged)
    except ConfigKeyError as err:
        raise ConfigError(_unknown_key_message(err, plain)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(err).splitlines()[0]
        where = f" (key: {key})" if key else ""
        raise ConfigError(f"invalid config{where}: {reason}") from None
    _check_complete(merged)
    _check_semantics(merged)
    _apply_lr_rule(merged)
    return merged


def _unknown_key_message(err: ConfigKeyError, plain: dict[str, Any]) -> str:
    key = str(getattr(err, "full_key", "") or "")
    section = key.split(".", 1)[0]
    if section in CHOICE_NODES and "." in key:
        name = plain[section]["name"]
        keys = ", ".join(k for k in section_keys(section, name) or () if k != "name")
        return (
            f"{key} is not an option of {section}={name} (its options: {keys or 'none'}): "
            "drop it, or pick the choice it belongs to"
        )
    reason = str(err).splitlines()[0]
    return f"invalid config (key: {key}): {reason}"


def _check_complete(cfg: DictConfig) -> None:
    # data.root of data=coco has its own message (_check_semantics).
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k != "data.root")
    if missing:
        first = missing[0]
        section = first.split(".", 1)[0]
        raise ConfigError(
            f"no value for {first}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f": set it in the {section} config file (conf/{section}/) or add {first}=VALUE"
        )


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
        cfg.train.batch_size * cfg.train.nproc_per_node * cfg.train.nnodes,
        cfg.train.lr_scale,
    )


def lr_rule(ref_lr: float, ref_batch: int, batch: int, scale: float = 1.0) -> float:
    """The linear scaling rule: ``ref_lr * batch / ref_batch * scale``."""
    return float(ref_lr) * batch / ref_batch * float(scale)
