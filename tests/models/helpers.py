"""Inputs and checks shared by the detector tests (tiny 64 x 64 images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def random_images(seed: int, batch: int = 2) -> torch.Tensor:
    """(batch, 3, 64, 64) normal noise."""
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def random_targets(
    seed: int, num_classes: int, counts: Sequence[int] = (2, 3)
) -> list[dict[str, torch.Tensor]]:
    """One target per count: that many boxes of side 12-32 px inside a 64-px image."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for g in counts:
        xy = torch.rand(g, 2, generator=gen) * 30
        wh = torch.rand(g, 2, generator=gen) * 20 + 12
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], dim=1),
                "labels": torch.randint(0, num_classes, (g,), generator=gen),
            }
        )
    return targets


def check_detections(
    detections: list[dict[str, torch.Tensor]],
    sizes: Sequence[tuple[int, int]],
    *,
    max_per_img: int,
    num_classes: int,
) -> None:
    """Eval outputs: one dict per image, sorted scores, boxes clipped to (h, w)."""
    assert len(detections) == len(sizes)
    for det, (h, w) in zip(detections, sizes, strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        assert not det["scores"].requires_grad
        k = det["scores"].shape[0]
        assert 0 < k <= max_per_img
        assert det["boxes"].shape == (k, 4) and det["labels"].shape == (k,)
        assert det["labels"].dtype == torch.long
        assert det["labels"].min() >= 0 and det["labels"].max() < num_classes
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
        boxes = det["boxes"]
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= w
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= h


# The smallest RetinaNet/FoveaBox the tests build (config_sections keys).
TINY_DENSE = dict(depth=18, base_width=8, fpn_channels=16, head_convs=1, head_channels=16)

SECTIONS = ("backbone", "detector", "loss", "box_error", "assigner")
CONF = Path(__file__).resolve().parents[2] / "conf"
# The choices a builder gets unless a keyword names another: the default experiment's.
DEFAULT_CHOICES = {"backbone": "resnet18", "loss": "alrp", "box_error": "giou", "assigner": "atss"}


def config_sections(detector: str, **values) -> dict:
    """The five config sections a ``detector`` builder takes, from the YAML files of conf/.

    Each keyword is a section's name, choosing its YAML file (``loss="focal"``,
    ``assigner="max_iou"``), or a YAML key of one of the chosen sections (the leaf names of
    these five are unique across them), overriding the file's value. ``track_grad_balance``
    passes through.
    """
    from omegaconf import OmegaConf

    from alrp_lab.config import schema

    choices = {**DEFAULT_CHOICES, "detector": detector}
    choices.update({key: values.pop(key) for key in list(values) if key in SECTIONS})
    out: dict = {}
    if "track_grad_balance" in values:
        out["track_grad_balance"] = values.pop("track_grad_balance")
    nodes = {}
    for section, choice in choices.items():
        typed = schema.CHOICE_NODES.get(section, {}).get(choice) or schema.SECTION_NODES[section]
        yaml_node = OmegaConf.load(CONF / section / f"{choice}.yaml")
        nodes[section] = OmegaConf.merge(OmegaConf.structured(typed), yaml_node)
    for key, value in values.items():
        owners = [name for name, node in nodes.items() if key in node and key != "name"]
        if len(owners) != 1:
            raise KeyError(f"{key!r} is a key of {owners or 'no chosen section'}")
        # Paths and tuples go in as plain values (OmegaConf keeps lists, not tuples).
        nodes[owners[0]][key] = str(value) if hasattr(value, "__fspath__") else value
    return {**nodes, **out}
