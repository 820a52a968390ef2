from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alrp_lab.config import ConfigError, validate_config

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_compose_to_the_main_experiment():
    cfg = validate_config(_compose())
    assert (cfg.detector.name, cfg.loss.name, cfg.box_error.name, cfg.assigner.name) == (
        "retinanet",
        "alrp",
        "giou",
        "atss",
    )
    assert cfg.loss.self_balance and cfg.loss.sb_init == 50.0
    assert cfg.data.name == "shapes"
    assert "~" not in cfg.data.root or cfg.data.root.startswith("~")


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=ap", "box_error=smooth_l1", "assigner=max_iou"],
        ["loss=focal", "box_error=l1"],
        ["loss=ce", "box_error=giou"],
        ["loss.self_balance=false", "loss.wr=10"],
        ["loss.sb_init=100"],
        ["box_error=iou"],
        ["debug=smoke"],
        ["backbone=resnet50"],
        ["detector=foveabox", "detector.sigma=0.6"],
        ["detector=faster_rcnn", "loss=ce", "box_error=giou", "loss.wr=10"],
        ["data=coco", "data.root=/tmp/coco"],
    ],
)
def test_every_paper_choice_is_one_override(overrides):
    cfg = validate_config(_compose(*overrides))
    for item in overrides:
        key, value = item.split("=", 1)
        if "." in key:
            assert OmegaConf.select(cfg, key) == yaml.safe_load(value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.epochs=abc"], "train.epochs"),
        (["+train.lr2=0.1"], "lr2"),
        (["loss.wr=3"], "loss.self_balance=false"),
        (["loss.self_balance=false"], "loss.wr"),
        (["loss=alrp", "box_error=smooth_l1"], "box_error=giou"),
        (["data=coco"], "data.root"),
        (["backbone.norm=batchnorm"], "backbone.norm"),
        (["logger.mode=sometimes"], "logger.mode"),
        (["detector=faster_rcnn", "loss=focal"], "loss=alrp or loss=ce"),
        (["train.max_iters_per_epoch=0"], "train.max_iters_per_epoch must be at least 1"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("+", r"\+")):
        validate_config(_compose(*overrides))


def test_grad_clip_must_be_positive():
    assert validate_config(_compose("train.grad_clip=35")).train.grad_clip == 35
    with pytest.raises(ConfigError, match="train.grad_clip"):
        validate_config(_compose("train.grad_clip=0"))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # aLRP: 0.008 at 32 images -> 0.002 at 8, times the scale.
        (["train.lr=null"], 0.002),
        (["train.lr=null", "train.lr_scale=2.5"], 0.005),
        # AP Loss: 0.002 at 32; Focal Loss: 0.01 at 16 (mmdetection's RetinaNet).
        (["train.lr=null", "loss=ap", "box_error=smooth_l1", "train.lr_scale=2.5"], 0.00125),
        (["train.lr=null", "loss=focal", "box_error=l1", "train.batch_size=16"], 0.01),
        # The global batch counts every process.
        (["train.lr=null", "train.nproc_per_node=4"], 0.008),
        # A number wins over the rule.
        (["train.lr=0.03", "train.lr_scale=2.5"], 0.03),
    ],
)
def test_lr_rule(overrides, expected):
    cfg = validate_config(_compose(*overrides))
    assert cfg.train.lr == pytest.approx(expected, rel=1e-12)


def test_lr_rule_needs_a_reference():
    with pytest.raises(ConfigError, match="loss.ref_lr"):
        validate_config(_compose("train.lr=null", "loss.ref_lr=null"))
    with pytest.raises(ConfigError, match="lr_scale"):
        validate_config(_compose("train.lr_scale=0"))


def test_interpolated_is_an_ap_loss_option():
    assert validate_config(_compose("loss=ap", "box_error=smooth_l1")).loss.interpolated
    with pytest.raises(ConfigError, match="loss.interpolated"):
        validate_config(_compose("+loss.interpolated=true"))


def test_smooth_l1_averages_the_coordinates_as_the_authors_ap_loss_heads():
    assert (
        validate_config(_compose("loss=ap", "box_error=smooth_l1")).box_error.coord_reduction
        == "mean"
    )
    assert (
        validate_config(_compose("loss=focal", "box_error=l1")).box_error.coord_reduction == "sum"
    )
    with pytest.raises(ConfigError, match="coord_reduction"):
        validate_config(_compose("loss=ap", "box_error=smooth_l1", "box_error.coord_reduction=max"))
