from __future__ import annotations

import colorsys
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from alrp_lab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Expand,
    MinIoURandomCrop,
    Normalize,
    PhotometricDistort,
    RandomHorizontalFlip,
    Resize,
    ResizeKeepRatio,
    ToArray,
    ToTensor,
    adjust_saturation,
    build_transforms,
    shift_hue,
)


def _random_case(seed: int, h: int = 48, w: int = 64, g: int = 5):
    """A random float image (h, w, 3) and target with g valid boxes inside it."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, size=(h, w, 3)).astype(np.float32)
    xy = rng.uniform(0, [w - 2, h - 2], size=(g, 2))
    wh = rng.uniform(1, [w, h], size=(g, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)
    target = {"boxes": boxes, "labels": rng.integers(0, 5, size=g), "image_id": 7}
    return image, target


def _coordinate_image(h: int, w: int) -> np.ndarray:
    """Channel 0 holds the column, channel 1 the row: a crop reveals where it was taken."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx, yy, np.zeros_like(xx)], axis=2)


def test_flip_hand_case() -> None:
    image = np.zeros((2, 10, 3), dtype=np.float32)
    image[:, 1] = 5.0
    target = {"boxes": np.array([[1.0, 2.0, 4.0, 5.0]], dtype=np.float32), "labels": [0]}
    out, t = RandomHorizontalFlip(p=1.0)(image, target, np.random.default_rng(0))
    np.testing.assert_array_equal(t["boxes"], [[6.0, 2.0, 9.0, 5.0]])
    assert out[0, 8, 0] == 5.0 and out[0, 1, 0] == 0.0
    assert target["boxes"][0, 0] == 1.0  # the input is not mutated


def test_flip_twice_is_identity() -> None:
    image, target = _random_case(seed=np.random.SeedSequence().entropy % 2**32)
    flip = RandomHorizontalFlip(p=1.0)
    once, t1 = flip(image, target, np.random.default_rng(0))
    twice, t2 = flip(once, t1, np.random.default_rng(0))
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_allclose(t2["boxes"], target["boxes"], atol=1e-4)
    assert not np.allclose(t1["boxes"], target["boxes"])


def test_resize_scales_boxes_exactly() -> None:
    image, target = _random_case(seed=3, h=30, w=40)
    out, t = Resize((90, 60))(image, target)
    assert out.shape == (90, 60, 3) and t["size"] == (90, 60)
    scale = np.array([60 / 40, 90 / 30, 60 / 40, 90 / 30], dtype=np.float32)
    np.testing.assert_allclose(t["boxes"], target["boxes"] * scale, rtol=1e-6)
    # A constant image stays constant through bilinear resampling.
    flat = np.full((30, 40, 3), 77.0, dtype=np.float32)
    np.testing.assert_allclose(Resize(16)(flat, target)[0], 77.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [((30, 40), 60, (60, 80)), ((100, 500), 500, (166, 830)), ((400, 300), 500, (667, 500))],
)
def test_resize_keep_ratio(hw, size, expected) -> None:
    image, target = _random_case(seed=4, h=hw[0], w=hw[1])
    out, t = ResizeKeepRatio(size, max_size=int(size * 1.66))(image, target)
    assert out.shape[:2] == expected
    sy, sx = expected[0] / hw[0], expected[1] / hw[1]
    np.testing.assert_allclose(t["boxes"], target["boxes"] * [sx, sy, sx, sy], rtol=1e-5)


def test_expand_moves_boxes_with_their_pixels() -> None:
    image, target = _random_case(seed=5, h=20, w=30)
    out, t = Expand(max_ratio=4.0, p=1.0)(image, target, np.random.default_rng(11))
    assert out.shape[0] >= 20 and out.shape[1] >= 30 and out.shape[:2] != (20, 30)
    shift = t["boxes"] - target["boxes"]
    left, top = round(float(shift[0, 0])), round(float(shift[0, 1]))
    np.testing.assert_allclose(shift, np.tile([left, top, left, top], (len(shift), 1)), atol=1e-5)
    np.testing.assert_array_equal(out[top : top + 20, left : left + 30], image)
    # Outside the pasted image: the mean colour.
    mask = np.ones(out.shape[:2], dtype=bool)
    mask[top : top + 20, left : left + 30] = False
    np.testing.assert_allclose(out[mask], np.broadcast_to(IMAGENET_MEAN, (mask.sum(), 3)))


def test_min_iou_crop_keeps_boxes_consistent_with_the_patch() -> None:
    crop = MinIoURandomCrop()
    cropped = 0
    for seed in np.random.SeedSequence().generate_state(40):
        rng = np.random.default_rng(seed)
        h, w = 48, 64
        _, target = _random_case(seed=int(seed), h=h, w=w, g=int(rng.integers(1, 6)))
        out, t = crop(_coordinate_image(h, w), target, rng)
        ch, cw = out.shape[:2]
        left, top = int(out[0, 0, 0]), int(out[0, 0, 1])
        boxes = target["boxes"].astype(np.float64)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (
            (centres[:, 0] > left)
            & (centres[:, 0] < left + cw)
            & (centres[:, 1] > top)
            & (centres[:, 1] < top + ch)
        )
        if (ch, cw) == (h, w):  # mode None: the whole image, untouched
            np.testing.assert_array_equal(t["boxes"], target["boxes"])
            continue
        cropped += 1
        # Sides are sampled as floats (h/w in [0.5, 2]) and then truncated to pixels.
        assert inside.any() and (ch + 1) / cw >= 0.5 and ch / (cw + 1) <= 2
        assert ch >= 0.3 * h - 1 and cw >= 0.3 * w - 1
        expected = boxes[inside].copy()
        expected[:, 0::2] = expected[:, 0::2].clip(left, left + cw) - left
        expected[:, 1::2] = expected[:, 1::2].clip(top, top + ch) - top
        np.testing.assert_allclose(t["boxes"], expected, atol=1e-4)
        np.testing.assert_array_equal(t["labels"], target["labels"][inside])
        assert t["size"] == (ch, cw)
        assert np.all(t["boxes"] >= 0) and np.all(t["boxes"][:, 2:] <= [cw, ch])
        assert np.all(t["boxes"][:, 2:] > t["boxes"][:, :2])
    assert cropped > 10


def test_min_iou_crop_patches_reach_the_minimum_iou() -> None:
    crop = MinIoURandomCrop()
    for seed in np.random.SeedSequence().generate_state(10):
        rng = np.random.default_rng(seed)
        _, target = _random_case(seed=int(seed), g=int(rng.integers(1, 4)))
        found = crop._sample_patch(rng, 48, 64, target["boxes"], 0.5)
        if found is None:
            continue
        patch, inside = found
        boxes = target["boxes"].astype(np.float64)
        lt = np.maximum(boxes[:, :2], patch[:2])
        rb = np.minimum(boxes[:, 2:], patch[2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        union = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(patch[2:] - patch[:2])
        assert np.all(inter / (union - inter) >= 0.5 - 1e-6) and inside.any()


def test_min_iou_crop_without_boxes_ends() -> None:
    image = np.zeros((32, 32, 3), dtype=np.float32)
    target = {"boxes": np.zeros((0, 4), dtype=np.float32), "labels": np.zeros(0, np.int64)}
    for seed in range(10):
        out, t = MinIoURandomCrop()(image, target, np.random.default_rng(seed))
        assert t["boxes"].shape == (0, 4) and out.shape[2] == 3


def test_saturation_matches_colorsys() -> None:
    rng = np.random.default_rng(np.random.SeedSequence().entropy % 2**32)
    rgb = rng.uniform(0, 255, size=(50, 3))
    factor = 0.7  # f * S <= 1, where the closed form is exact
    out = adjust_saturation(rgb[None], factor)[0]
    for pixel, got in zip(rgb, out, strict=True):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        np.testing.assert_allclose(got, colorsys.hsv_to_rgb(h, s * factor, v), atol=1e-6)
    gray = adjust_saturation(rgb[None], 0.0)[0]
    np.testing.assert_allclose(gray, np.repeat(rgb.max(axis=1, keepdims=True), 3, axis=1))


def test_hue_shift_matches_colorsys() -> None:
    np.testing.assert_allclose(
        shift_hue(np.array([[[255.0, 0.0, 0.0]]]), 120.0), [[[0.0, 255.0, 0.0]]], atol=1e-4
    )
    gray = np.full((1, 2, 3), 90.0)
    np.testing.assert_allclose(shift_hue(gray, 45.0), gray)
    rng = np.random.default_rng(np.random.SeedSequence().entropy % 2**32)
    rgb = rng.uniform(0, 255, size=(1, 64, 3))
    degrees = rng.uniform(-180, 180)
    out = shift_hue(rgb, degrees)[0]
    for pixel, got in zip(rgb[0], out, strict=True):
        h, s, v = colorsys.rgb_to_hsv(*(pixel / 255))
        ref = np.array(colorsys.hsv_to_rgb((h + degrees / 360) % 1, s, v)) * 255
        np.testing.assert_allclose(got, ref, atol=1e-3)


def test_photometric_distort_stays_in_range_and_leaves_boxes() -> None:
    image, target = _random_case(seed=9)
    for seed in range(5):
        out, t = PhotometricDistort()(image, target, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
        assert t["boxes"] is target["boxes"]


def test_normalize_and_to_tensor() -> None:
    image = np.empty((2, 3, 3), dtype=np.float32)
    image[...] = IMAGENET_MEAN
    image[0, 0] = np.add(IMAGENET_MEAN, IMAGENET_STD)
    norm, target = Normalize()(image, {"boxes": [[0, 0, 1, 1]], "labels": [4]})
    tensor, t = ToTensor()(norm, target)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[:, 0, 0], torch.ones(3))
    assert tensor.abs()[:, 1:].sum() < 1e-4
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["size"] == (2, 3)


def test_to_array_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="RGB image"):
        ToArray()(np.zeros((4, 4), dtype=np.uint8), {})


def test_build_transforms_train_and_test_shapes() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8))
    target = {"boxes": np.array([[5, 5, 30, 20]], np.float32), "labels": np.array([2])}
    for augment in ("ssd", "flip", "none"):
        out, t = build_transforms(True, 32, augment)(image, target)
        assert out.shape == (3, 32, 32) and t["size"] == (32, 32)
        assert torch.all(t["boxes"] >= 0) and torch.all(t["boxes"] <= 32)
    out, t = build_transforms(False, 32)(image, target)
    assert out.shape == (3, 32, 48)
    torch.testing.assert_close(t["boxes"], torch.tensor([[4.0, 4.0, 24.0, 16.0]]))


def test_build_transforms_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="augment='autoaug' is not one of ssd, flip, none"):
        build_transforms(True, 32, "autoaug")
    with pytest.raises(ValueError, match="size must be a positive integer"):
        build_transforms(True, 0)


def test_compose_is_repeatable_under_torch_seed_and_picklable() -> None:
    image, target = _random_case(seed=10)
    pipeline = build_transforms(True, 32, "ssd")
    torch.manual_seed(123)
    a, ta = pipeline(image, target)
    torch.manual_seed(123)
    b, tb = pipeline(image, target)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta["boxes"], tb["boxes"])
    # DataLoader workers receive a pickled copy.
    clone = pickle.loads(pickle.dumps(pipeline))
    torch.manual_seed(123)
    c, _ = clone(image, target)
    torch.testing.assert_close(a, c)
    outs = {pipeline(image, target)[0].sum().item() for _ in range(6)}
    assert len(outs) > 1  # the stream moves on between calls


def test_compose_with_own_generator() -> None:
    image, target = _random_case(seed=12)
    outs = [
        Compose([PhotometricDistort(), ToTensor()], torch.Generator().manual_seed(5))(
            image, target
        )[0]
        for _ in range(2)
    ]
    torch.testing.assert_close(outs[0], outs[1])
