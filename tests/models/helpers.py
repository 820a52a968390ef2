"""Inputs and checks shared by the detector tests (tiny 64 x 64 images)."""

from __future__ import annotations

from collections.abc import Sequence

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


SECTIONS = ("backbone", "detector", "loss", "box_error", "assigner")


def config_sections(**values) -> dict:
    """The five config sections a detector builder takes, from the schema's defaults.

    Each keyword is a YAML key of one section (its leaf names are unique across them), or a
    section's name for its ``name`` key (``loss="focal"``, ``assigner="max_iou"``).
    ``track_grad_balance`` passes through.
    """
    from omegaconf import OmegaConf

    from alrp_lab.config import schema

    nodes = {
        "backbone": OmegaConf.structured(schema.BackboneConfig),
        "detector": OmegaConf.structured(schema.DetectorConfig),
        "loss": OmegaConf.structured(schema.LossConfig),
        "box_error": OmegaConf.structured(schema.BoxErrorConfig),
        "assigner": OmegaConf.structured(schema.AssignerConfig),
    }
    out: dict = {}
    for key, value in values.items():
        if key == "track_grad_balance":
            out[key] = value
            continue
        if key in nodes:
            nodes[key].name = value
            continue
        owners = [name for name, node in nodes.items() if key in node and key != "name"]
        if len(owners) != 1:
            raise KeyError(f"{key!r} is a key of {owners or 'no section'}")
        # Paths and tuples go in as plain values (OmegaConf keeps lists, not tuples).
        nodes[owners[0]][key] = str(value) if hasattr(value, "__fspath__") else value
    return {**nodes, **out}
