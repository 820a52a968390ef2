"""Pretraining: a tiny run end to end, the cache key, the cached file and its reuse."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alrp_lab.models.backbone import ResNet
from alrp_lab.models.weights import load_backbone_weights
from alrp_lab.pretrain import (
    PretrainConfig,
    PretrainSpec,
    builtin_weights,
    pretrain_backbone,
    weights_path,
)
from alrp_lab.pretrain import cache as cache_module
from alrp_lab.pretrain.cache import read_manifest

TINY = PretrainSpec(
    depth=18,
    groups=1,
    width_per_group=64,
    base_width=8,
    task=PretrainConfig(
        num_classes=3,
        instances=4,
        image_size=32,
        iterations=3,
        batch_size=4,
        lr=0.1,
        weight_decay=1e-4,
        seed=0,
    ),
)


def _with_task(**changes) -> PretrainSpec:
    return dataclasses.replace(TINY, task=dataclasses.replace(TINY.task, **changes))


def test_tiny_pretraining_is_deterministic_and_loads() -> None:
    a = pretrain_backbone(TINY)
    b = pretrain_backbone(TINY)
    assert set(a.state_dict) == set(ResNet(18, base_width=8).state_dict())
    for key, value in a.state_dict.items():
        torch.testing.assert_close(value, b.state_dict[key], rtol=0, atol=0)
    assert 0.0 <= a.val_accuracy <= 1.0
    # The weights moved away from a fresh initialisation with the same seed.
    torch.manual_seed(TINY.task.seed)
    fresh = ResNet(18, base_width=8).state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], a.state_dict["layer1.0.conv1.weight"])


def _changed(name: str, value):
    if name == "depth":
        return 34
    return value + 1 if not isinstance(value, float) else value / 2


def test_key_changes_with_every_field() -> None:
    keys = {TINY.key()}
    arch = [f.name for f in dataclasses.fields(PretrainSpec) if f.name != "task"]
    for name in arch:
        keys.add(dataclasses.replace(TINY, **{name: _changed(name, getattr(TINY, name))}).key())
    task = [f.name for f in dataclasses.fields(PretrainConfig)]
    for name in task:
        keys.add(_with_task(**{name: _changed(name, getattr(TINY.task, name))}).key())
    assert len(keys) == len(arch) + len(task) + 1


def test_cache_builds_once_then_reuses(tmp_path, monkeypatch) -> None:
    path = builtin_weights(TINY, root=tmp_path, show_progress=False)
    assert path == weights_path(TINY, tmp_path) and path.is_file()
    assert read_manifest(path)["key"] == TINY.key()
    assert not list(tmp_path.glob("*.tmp"))

    def no_second_build(*args, **kwargs):
        raise AssertionError("the cached weights were rebuilt")

    monkeypatch.setattr(cache_module, "pretrain_backbone", no_second_build)
    assert builtin_weights(TINY, root=tmp_path, show_progress=False) == path
    model = ResNet(18, base_width=8, norm="frozen_bn", frozen_stages=1)
    assert load_backbone_weights(model, path) == []


def test_a_build_shows_its_progress(tmp_path, capsys) -> None:
    # A first `backbone.weights=builtin` run builds for minutes: it says what and how far.
    builtin_weights(TINY, root=tmp_path, show_progress=True)
    out = capsys.readouterr().out
    assert "fractal images" in out
    assert "pretraining steps" in out
    assert f"{TINY.task.iterations}/{TINY.task.iterations}" in out


def test_bad_spec() -> None:
    with pytest.raises(ValueError, match="image_size"):
        _with_task(image_size=16)
    with pytest.raises(ValueError, match="iterations"):
        _with_task(iterations=0)
