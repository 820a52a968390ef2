"""The builders: config keys to constructors, including the built-in pretrained backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from alrp_lab.config import validate_config
from alrp_lab.engine.builders import backbone_weights_path, build_model, model_signature
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


def test_faster_rcnn_signature_tells_the_pyramids_apart():
    # P2..P6 has one more lateral convolution than P3..P7: a checkpoint of one must not be
    # offered to the other as "the model code changed".
    p3 = model_signature(_cfg("detector=faster_rcnn", "assigner=max_iou"), num_classes=3)
    p2 = model_signature(
        _cfg("detector=faster_rcnn", "assigner=max_iou", "detector.min_level=2"), num_classes=3
    )
    assert (p3["min_level"], p2["min_level"]) == (3, 2)
    assert {k: v for k, v in p2.items() if k != "min_level"} == {
        k: v for k, v in p3.items() if k != "min_level"
    }


def test_weights_path_passes_a_file_and_null_through(tmp_path):
    assert backbone_weights_path(_cfg()) is None
    assert backbone_weights_path(_cfg(f"backbone.weights={tmp_path}/r.pth")) == f"{tmp_path}/r.pth"


def _batch(cfg, count: int = 2):
    from torch.utils.data import DataLoader

    from alrp_lab.data.collate import collate_detection
    from alrp_lab.engine.builders import build_datasets

    train_set, _ = build_datasets(cfg.data)
    loader = DataLoader(train_set, batch_size=count, shuffle=False, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    sizes = [tuple(int(v) for v in t["size"]) for t in targets]
    return images, targets, sizes, train_set.num_classes


@pytest.mark.parametrize(
    "overrides",
    [
        ("assigner=max_iou",),
        ("detector=foveabox", "loss=focal"),
        ("detector=faster_rcnn", "assigner=max_iou"),
    ],
)
def test_channels_last_computes_what_the_contiguous_layout_does(overrides):
    """train.channels_last changes memory strides only: in float64 one training forward and
    backward gives the contiguous model's loss and gradients (code that read a tensor's raw
    memory as if it had the default strides would mix up anchors or channels here)."""
    cfg = _cfg(*overrides)
    images, targets, sizes, num_classes = _batch(cfg)
    runs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=num_classes).double().to(memory_format=layout)
        model.train()
        losses = model(images.double().to(memory_format=layout), targets, image_sizes=sizes)
        losses["loss"].backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        runs.append((losses["loss"].detach(), grads))
    (loss, grads), (loss_cl, grads_cl) = runs
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss_cl, loss, rtol=1e-10, atol=1e-12)
    assert grads.keys() == grads_cl.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads_cl[name], grads[name], rtol=1e-8, atol=1e-10, msg=name)
    backbone_conv = model.backbone.conv1.weight
    assert backbone_conv.is_contiguous(memory_format=torch.channels_last)
