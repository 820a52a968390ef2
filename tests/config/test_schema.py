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
    # The default recipe: from scratch, the lr rule (x2.5), SB from the second epoch,
    # gradient norm clipped at 35.
    assert cfg.backbone.weights is None and cfg.train.grad_clip == 35
    assert cfg.train.lr == pytest.approx(0.005) and cfg.loss.sb_start == 250
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
        # The default experiment: aLRP's 0.008 at 32 images -> 0.002 at 8, x2.5.
        ([], 0.005),
        (["train.lr_scale=1"], 0.002),
        # AP Loss: 0.002 at 32; Focal Loss: 0.01 at 16 (mmdetection's RetinaNet).
        (["loss=ap", "box_error=smooth_l1"], 0.00125),
        (["loss=focal", "box_error=l1", "train.batch_size=16", "train.lr_scale=1"], 0.01),
        # The global batch counts every process.
        (["train.nproc_per_node=4", "train.lr_scale=1"], 0.008),
        (["train.nproc_per_node=2", "train.nnodes=2", "train.lr_scale=1"], 0.008),
        # The paper scale and the authors' configs give their lr, whatever the cpu factor.
        (["scale=paper", "data.root=/coco", "backbone.weights=/w.pth"], 0.008),
        # A number wins over the rule.
        (["train.lr=0.03", "train.lr_scale=2.5"], 0.03),
    ],
)
def test_lr_rule(overrides, expected):
    cfg = validate_config(_compose(*overrides))
    assert cfg.train.lr == pytest.approx(expected, rel=1e-12)


def test_lr_rule_needs_a_reference():
    with pytest.raises(ConfigError, match="loss.ref_lr"):
        validate_config(_compose("loss.ref_lr=null"))
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


def _nodes():
    from alrp_lab.config import schema

    for section, node in schema.SECTION_NODES.items():
        yield section, None, node
    for section, nodes in schema.CHOICE_NODES.items():
        for name, node in nodes.items():
            yield section, name, node


def test_every_choice_has_a_node_and_a_yaml_file():
    from alrp_lab.assigners import ASSIGNERS
    from alrp_lab.config import schema
    from alrp_lab.losses import BOX_ERRORS, CLASSIFICATION_LOSSES
    from alrp_lab.models import DETECTORS

    registries = {
        "detector": DETECTORS,
        "loss": CLASSIFICATION_LOSSES,
        "box_error": BOX_ERRORS,
        "assigner": ASSIGNERS,
    }
    assert set(schema.CHOICE_NODES) == set(registries)
    for section, registry in registries.items():
        assert set(schema.CHOICE_NODES[section]) == set(registry), section
        files = {p.stem for p in (Path(CONF) / section).glob("*.yaml")}
        assert files == set(registry), section


@pytest.mark.parametrize(("section", "name", "node"), list(_nodes()), ids=lambda v: str(v))
def test_the_schema_holds_no_values(section, name, node):
    """Values live in the YAML only: no field of a node has a default of its own (the data
    set's keys of the other data set are null, meaning "not read")."""
    import dataclasses

    from omegaconf import MISSING

    from alrp_lab.config import schema

    for f in dataclasses.fields(node):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            continue
        common = set(schema.DATA_KEYS["shapes"]) & set(schema.DATA_KEYS["coco"])
        if node is schema.DataConfig and f.name not in common:
            assert f.default is None, f.name
            continue
        assert f.default == MISSING, f"{section}.{f.name} has a default: {f.default!r}"


@pytest.mark.parametrize(("section", "name", "node"), list(_nodes()), ids=lambda v: str(v))
def test_each_yaml_file_sets_exactly_its_nodes_keys(section, name, node):
    import dataclasses

    from alrp_lab.config import schema

    files = [f"{name}.yaml"] if name else [p.name for p in (Path(CONF) / section).glob("*.yaml")]
    for file in files:
        keys = set(yaml.safe_load((Path(CONF) / section / file).read_text())) - {"defaults"}
        expected = {f.name for f in dataclasses.fields(node)}
        if node is schema.DataConfig:
            expected = set(schema.DATA_KEYS[Path(file).stem])
        assert keys == expected, (
            f"{section}/{file}: extra {keys - expected}, missing {expected - keys}"
        )


def test_a_key_of_another_choice_is_an_error_that_lists_the_options():
    with pytest.raises(ConfigError, match=r"loss\.alpha is not an option of loss=alrp.*delta"):
        validate_config(_compose("+loss.alpha=0.5"))
    with pytest.raises(ConfigError, match=r"box_error\.beta is not an option of box_error=giou"):
        validate_config(_compose("+box_error.beta=0.11"))
    # The same key is an option of the choice it belongs to.
    cfg = validate_config(_compose("box_error=smooth_l1", "box_error.beta=0.11", "loss=ap"))
    assert cfg.box_error.beta == 0.11


def test_a_key_without_a_value_names_it():
    plain = OmegaConf.to_container(_compose())
    del plain["train"]["epochs"]
    with pytest.raises(ConfigError, match=r"no value for train\.epochs.*conf/train/"):
        validate_config(plain)
