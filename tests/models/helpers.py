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
