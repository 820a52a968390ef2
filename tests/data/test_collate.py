from __future__ import annotations

import pytest
import torch

from alrp_lab.data.collate import collate_detection


def _item(c: int, h: int, w: int, fill: float, image_id: int):
    return torch.full((c, h, w), fill), {"image_id": image_id, "size": (h, w)}


def test_pads_to_multiple_of_32_at_bottom_right() -> None:
    batch = [_item(3, 20, 30, 1.0, 1), _item(3, 40, 10, 2.0, 2)]
    images, targets = collate_detection(batch)
    assert images.shape == (2, 3, 64, 32)
    assert torch.all(images[0, :, :20, :30] == 1) and images[0, :, 20:].abs().sum() == 0
    assert images[0, :, :, 30:].abs().sum() == 0
    assert torch.all(images[1, :, :40, :10] == 2) and images[1, :, 40:].abs().sum() == 0
    assert images[1, :, :, 10:].abs().sum() == 0
    assert [t["image_id"] for t in targets] == [1, 2]
    assert targets[0] is batch[0][1]


@pytest.mark.parametrize(("divisor", "expected"), [(1, (40, 30)), (8, (40, 32)), (40, (40, 40))])
def test_size_divisor(divisor: int, expected: tuple[int, int]) -> None:
    images, _ = collate_detection([_item(3, 20, 30, 1.0, 1), _item(3, 40, 10, 2.0, 2)], divisor)
    assert images.shape[-2:] == expected


def test_sizes_already_aligned_are_not_padded() -> None:
    image = torch.randn(3, 64, 96, dtype=torch.float64)
    images, _ = collate_detection([(image, {})])
    assert images.shape == (1, 3, 64, 96) and images.dtype == torch.float64
    torch.testing.assert_close(images[0], image)


def test_bad_batches() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])
    with pytest.raises(ValueError, match=r"\(C, H, W\) with one C"):
        collate_detection([_item(3, 8, 8, 0.0, 1), _item(1, 8, 8, 0.0, 2)])
    with pytest.raises(ValueError, match="size_divisor"):
        collate_detection([_item(3, 8, 8, 0.0, 1)], size_divisor=0)
