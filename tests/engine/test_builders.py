"""The builders: config keys to constructors, including the built-in pretrained backbone."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from alrp_lab.config import validate_config
from alrp_lab.engine.builders import backbone_weights_path, build_model
from alrp_lab.pretrain import spec_from_config, weights_path

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return validate_config(compose("config", overrides=["debug=smoke", *overrides]))


def test_builtin_weights_are_built_once_and_loaded():
    cfg = _cfg("backbone.weights=builtin", "backbone.norm=frozen_bn", "backbone.frozen_stages=1")
    spec = spec_from_config(cfg.backbone, cfg.pretrain)
    # debug=smoke pretrains a tiny backbone (never the full one) into the test cache.
    assert (spec.task.iterations, spec.task.num_classes, spec.base_width) == (3, 3, 16)
    path = Path(backbone_weights_path(cfg))
    assert path == weights_path(spec)
    assert str(path).startswith(os.environ["ALRP_LAB_DATA"])
    model = build_model(cfg, num_classes=3)
    saved = torch.load(path, weights_only=True)
    for key in ("conv1.weight", "layer2.1.conv2.weight", "layer4.0.bn1.running_var"):
        torch.testing.assert_close(model.backbone.state_dict()[key], saved[key], rtol=0, atol=0)
    assert not model.backbone.conv1.weight.requires_grad  # frozen stem, as the authors'


def test_weights_path_passes_a_file_and_null_through(tmp_path):
    assert backbone_weights_path(_cfg()) is None
    assert backbone_weights_path(_cfg(f"backbone.weights={tmp_path}/r.pth")) == f"{tmp_path}/r.pth"
