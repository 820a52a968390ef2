"""Every YAML key of the config sections reaches a detector builder, under its own name.

A builder takes the sections whole (``build_X(num_classes, backbone=, detector=, loss=,
box_error=, assigner=)``) and reads them by their YAML keys; here each section is wrapped so
that the keys read are recorded, and every key that the section's YAML files hold must be
among them. A key the builder ignored (or replaced by a default of its own, as FoveaBox's
smooth L1 beta once was) fails this test.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from alrp_lab.assigners import ASSIGNERS
from alrp_lab.config import validate_config
from alrp_lab.models import DETECTORS

CONF = Path(__file__).resolve().parents[2] / "conf"
SECTIONS = ("backbone", "detector", "loss", "box_error", "assigner")
# Keys other code reads: the registry lookup (engine.builders) and the training loop.
READ_ELSEWHERE = {
    "detector": {"name"},
    "loss": {"sb_period", "sb_start", "ref_lr", "ref_batch"},
}
# The losses and box errors each detector trains with (the schema's rules).
COMBINATIONS = {
    "retinanet": [("alrp", "giou"), ("ap", "smooth_l1"), ("focal", "l1"), ("ce", "giou")],
    "foveabox": [("alrp", "giou"), ("ap", "smooth_l1"), ("focal", "smooth_l1")],
    "faster_rcnn": [("alrp", "giou"), ("ce", "l1")],
}
# Sections a detector does not use: FoveaBox and Faster R-CNN assign positives their own way.
UNUSED = {"foveabox": {"assigner"}, "faster_rcnn": {"assigner"}}


class _Recorder:
    """Reads through to a config node and records the keys asked for (by attribute, and
    through ``keys()`` when a builder unpacks a node's options)."""

    def __init__(self, node, seen: set[str]) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_seen", seen)

    def keys(self):
        return self._node.keys()

    def __getattr__(self, key: str):
        self._seen.add(key)
        return getattr(self._node, key)


def _yaml_keys(group: str, choices: list[str]) -> set[str]:
    keys: set[str] = set()
    for choice in choices:
        keys |= set(yaml.safe_load((CONF / group / f"{choice}.yaml").read_text()) or {})
    return keys


def _cfg(detector: str, loss: str, box_error: str, assigner: str):
    overrides = [
        "debug=smoke",
        f"detector={detector}",
        f"loss={loss}",
        f"box_error={box_error}",
        f"assigner={assigner}",
    ]
    if loss != "alrp":
        overrides.append("loss.self_balance=false")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate_config(compose("config", overrides=overrides))


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_every_yaml_key_reaches_the_builder(detector):
    seen = {name: set() for name in SECTIONS}
    for loss, box_error in COMBINATIONS[detector]:
        for assigner in ASSIGNERS:
            cfg = _cfg(detector, loss, box_error, assigner)
            sections = {name: _Recorder(cfg[name], seen[name]) for name in SECTIONS}
            DETECTORS[detector].build(3, **sections)
    expected = {
        "backbone": _yaml_keys("backbone", ["resnet18", "resnet50"]),
        "detector": _yaml_keys("detector", [detector]),
        "loss": _yaml_keys("loss", sorted({loss for loss, _ in COMBINATIONS[detector]})),
        "box_error": _yaml_keys("box_error", sorted({b for _, b in COMBINATIONS[detector]})),
        "assigner": _yaml_keys("assigner", ["atss", "max_iou"]),
    }
    if detector != "retinanet":
        expected["loss"] -= {"zero_target"}  # a RetinaNet-only ablation (the schema says so)
    if detector == "faster_rcnn":
        expected["loss"] -= {"global_rank"}  # the one-stage detectors' (the schema says so)
    for name in SECTIONS:
        if name in UNUSED.get(detector, set()):
            continue
        missing = expected[name] - seen[name] - READ_ELSEWHERE.get(name, set())
        assert not missing, f"{detector}: {name} keys never read by the builder: {missing}"


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_builders_take_the_sections_and_nothing_with_a_default_of_its_own(detector):
    params = inspect.signature(DETECTORS[detector].build).parameters
    assert list(params) == ["num_classes", *SECTIONS, "track_grad_balance"]
    assert all(params[name].default is inspect.Parameter.empty for name in SECTIONS)
