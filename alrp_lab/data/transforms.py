"""Detection transforms on (image, target) pairs, SSD-style augmentation included.

Every transform is a callable ``(image, target, rng) -> (image, target)``. Inside the chain
an image is a numpy float32 array (H, W, 3) with RGB values on the 0..255 scale, and a
target is a dict whose ``boxes`` is a numpy float32 (G, 4) xyxy array in that image's pixels
and ``labels`` a numpy int64 (G,) array; other keys pass through untouched. :class:`ToArray`
starts a chain (it accepts a PIL image or a uint8/float array) and :class:`ToTensor` ends
it with a torch image (3, H, W) float32 and torch boxes/labels.

Randomness comes from one ``numpy.random.Generator`` per sample, which :class:`Compose` seeds
from torch's random stream: ``torch.manual_seed`` makes a run repeatable, and DataLoader
workers (each seeded differently by torch) draw different augmentations.

The SSD recipe follows the authors' mmdetection pipeline: photometric distortion, expand
(1-4x canvas filled with the mean), min-IoU random crop, resize, flip, normalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Transform",
    "Compose",
    "ToArray",
    "adjust_saturation",
    "shift_hue",
    "PhotometricDistort",
    "Expand",
    "MinIoURandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ResizeKeepRatio",
    "Normalize",
    "ToTensor",
    "build_transforms",
]

# ImageNet statistics on the 0..255 scale, RGB.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

Target = dict[str, Any]


def _with(target: Target, **updates: Any) -> Target:
    """A shallow copy of ``target`` with some keys replaced (inputs are never mutated)."""
    out = dict(target)
    out.update(updates)
    return out


def _size_of(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


class Transform:
    """Base class: ``__call__(image (H, W, 3) float32, target, rng) -> (image, target)``."""

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[Any, Target]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None:
        return rng
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class Compose:
    """Apply transforms in order with one random stream per call.

    Args:
        transforms: the steps.
        generator: torch generator the per-sample seed is drawn from; ``None`` (the
            default, and the right choice with DataLoader workers) uses torch's global
            stream, which each worker seeds differently.
    """

    def __init__(
        self, transforms: Sequence[Transform], generator: torch.Generator | None = None
    ) -> None:
        self.transforms = list(transforms)
        self.generator = generator

    def __call__(
        self, image: Any, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[Any, Target]:
        if rng is None:
            seed = torch.randint(0, 2**62, (1,), generator=self.generator).item()
            rng = np.random.default_rng(int(seed))
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"  {t!r},\n" for t in self.transforms) + ")"


class ToArray(Transform):
    """PIL image or array (H, W, 3) -> float32 array (H, W, 3); boxes/labels to numpy."""

    def __call__(
        self,
        image: Image.Image | np.ndarray,
        target: Target,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, Target]:
        if isinstance(image, Image.Image):
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.float32)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(
                f"expected an RGB image (H, W, 3), got an array of shape {array.shape}; "
                "convert it with PIL's .convert('RGB')"
            )
        boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float32)
        labels = np.asarray(target.get("labels", np.zeros((0,))), dtype=np.int64)
        out = _with(
            target, boxes=boxes.reshape(-1, 4), labels=labels.reshape(-1), size=_size_of(array)
        )
        return array, out


# ------------------------------------------------------------------ colour (photometric)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply HSV saturation by ``factor``: (H, W, 3) float -> (H, W, 3) float.

    With V the largest channel, every channel is ``V * (1 - S * k)`` where k depends only
    on the hue, so scaling S is ``V - factor * (V - c)`` per channel: no HSV round trip.
    Exact while ``factor * S <= 1``; beyond that channels go below 0 and are clipped later.
    """
    value = image.max(axis=2, keepdims=True)
    return value - np.float32(factor) * (value - image)


def shift_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate the HSV hue by ``degrees``: (H, W, 3) float 0..255 -> (H, W, 3) float32.

    A hue rotation keeps each pixel's largest channel V and chroma C = V - min; only the
    hue h (in sixths of a turn) moves, and channel n is ``V - C * clip(min(k, 4 - k), 0, 1)``
    with ``k = (n + h) mod 6`` (n = 5, 3, 1 for R, G, B): the standard HSV formulas without
    building an HSV image.
    """
    image = np.asarray(image, dtype=np.float32)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    value = image.max(axis=2)
    chroma = value - image.min(axis=2)
    safe = np.where(chroma > 0, chroma, np.float32(1))
    # Which channel is the largest decides the hue's sector (colorsys's formulas).
    hue = np.where(
        value == r, (g - b) / safe, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue += np.float32(degrees / 60.0)
    out = np.empty_like(image)
    for channel, n in enumerate((5.0, 3.0, 1.0)):
        k = (hue + np.float32(n)) % 6
        out[..., channel] = value - chroma * np.clip(np.minimum(k, 4 - k), 0, 1)
    return out


class PhotometricDistort(Transform):
    """SSD's photometric distortion, each step with probability 0.5.

    Brightness (add U(-delta, delta)), contrast (multiply U(lo, hi); before or after the
    HSV steps, chosen at random), saturation (multiply S by U(lo, hi)), hue (add
    U(-hue_delta, hue_delta) degrees); the result is clipped to 0..255.
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        rng = _rng(rng)
        image = image.astype(np.float32, copy=True)
        if rng.random() < 0.5:
            image += np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = rng.random() < 0.5
        if contrast_first and rng.random() < 0.5:
            image *= np.float32(rng.uniform(*self.contrast_range))
        if rng.random() < 0.5:
            image = adjust_saturation(np.clip(image, 0, 255), rng.uniform(*self.saturation_range))
        if rng.random() < 0.5:
            image = shift_hue(image, rng.uniform(-self.hue_delta, self.hue_delta))
        if not contrast_first and rng.random() < 0.5:
            image *= np.float32(rng.uniform(*self.contrast_range))
        return np.clip(image, 0, 255), target


# --------------------------------------------------------------------------- geometry


class Expand(Transform):
    """Zoom out: put the image on a canvas ``ratio`` times larger, filled with ``mean``.

    With probability ``p``; ``ratio`` is U(1, max_ratio) and the image's place uniform.
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, max_ratio: float = 4.0, p: float = 0.5
    ) -> None:
        if max_ratio < 1:
            raise ValueError(f"Expand: max_ratio must be >= 1, got {max_ratio}")
        self.mean = tuple(float(m) for m in mean)
        self.max_ratio = max_ratio
        self.p = p

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        rng = _rng(rng)
        if rng.random() >= self.p:
            return image, target
        h, w = _size_of(image)
        ratio = rng.uniform(1, self.max_ratio)
        new_h, new_w = int(h * ratio), int(w * ratio)
        top = int(rng.uniform(0, new_h - h))
        left = int(rng.uniform(0, new_w - w))
        canvas = np.empty((new_h, new_w, 3), dtype=np.float32)
        canvas[...] = np.asarray(self.mean, dtype=np.float32)
        canvas[top : top + h, left : left + w] = image
        offset = np.asarray([left, top, left, top], dtype=np.float32)
        return canvas, _with(target, boxes=target["boxes"] + offset, size=(new_h, new_w))


def _iou_with_patch(boxes: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """IoU of boxes (G, 4) with one box patch (4,) -> (G,)."""
    lt = np.maximum(boxes[:, :2], patch[:2])
    rb = np.minimum(boxes[:, 2:], patch[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    area_patch = np.prod(patch[2:] - patch[:2])
    return inter / np.maximum(area + area_patch - inter, 1e-9)


class MinIoURandomCrop(Transform):
    """SSD's random crop: a patch whose IoU with every box is at least a sampled minimum.

    Each call picks a mode from ``(None, *min_ious, 0.0)`` - ``None`` keeps the whole image,
    0.0 is an unconstrained crop (mmdetection's set). Up to ``max_trials`` patches per mode
    are drawn with sides U(min_crop_size, 1) of the image's and aspect ratio h/w in
    [0.5, 2]; a patch is accepted when its IoU with every box reaches the mode and at least
    one box centre lies strictly inside it. Boxes whose centre is inside are kept and
    clipped to the patch; the others are dropped with their labels. If no mode succeeds
    within ``max_rounds`` the image is returned unchanged (so the call always ends).
    """

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        min_crop_size: float = 0.3,
        max_trials: int = 50,
        max_rounds: int = 10,
    ) -> None:
        if not 0 < min_crop_size <= 1:
            raise ValueError(
                f"MinIoURandomCrop: min_crop_size must be in (0, 1], got {min_crop_size}"
            )
        self.modes: tuple[float | None, ...] = (None, *(float(m) for m in min_ious), 0.0)
        self.min_crop_size = min_crop_size
        self.max_trials = max_trials
        self.max_rounds = max_rounds

    def _sample_patch(
        self, rng: np.random.Generator, h: int, w: int, boxes: np.ndarray, min_iou: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        for _ in range(self.max_trials):
            new_w = rng.uniform(self.min_crop_size * w, w)
            new_h = rng.uniform(self.min_crop_size * h, h)
            if not 0.5 <= new_h / new_w <= 2:
                continue
            left = rng.uniform(0, w - new_w)
            top = rng.uniform(0, h - new_h)
            patch = np.asarray(
                [int(left), int(top), int(left + new_w), int(top + new_h)], dtype=np.float32
            )
            if patch[2] <= patch[0] or patch[3] <= patch[1]:
                continue
            if len(boxes) == 0:
                return patch, np.zeros(0, dtype=bool)
            if _iou_with_patch(boxes, patch).min() < min_iou:
                continue
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = (
                (centres[:, 0] > patch[0])
                & (centres[:, 1] > patch[1])
                & (centres[:, 0] < patch[2])
                & (centres[:, 1] < patch[3])
            )
            if inside.any():
                return patch, inside
        return None

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        rng = _rng(rng)
        h, w = _size_of(image)
        boxes = target["boxes"]
        for _ in range(self.max_rounds):
            mode = self.modes[int(rng.integers(len(self.modes)))]
            if mode is None:
                return image, target
            found = self._sample_patch(rng, h, w, boxes, mode)
            if found is None:
                continue
            patch, inside = found
            x1, y1, x2, y2 = (int(v) for v in patch)
            kept = boxes[inside].copy()
            kept[:, 0::2] = kept[:, 0::2].clip(x1, x2) - x1
            kept[:, 1::2] = kept[:, 1::2].clip(y1, y2) - y1
            crop = image[y1:y2, x1:x2]
            return crop, _with(
                target, boxes=kept, labels=target["labels"][inside], size=_size_of(crop)
            )
        return image, target


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``p``: x1' = W - x2, x2' = W - x1."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        rng = _rng(rng)
        if rng.random() >= self.p:
            return image, target
        w = image.shape[1]
        boxes = target["boxes"]
        flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        return np.ascontiguousarray(image[:, ::-1]), _with(target, boxes=flipped)


def _resize(image: np.ndarray, target: Target, new_h: int, new_w: int) -> tuple[np.ndarray, Target]:
    """Bilinear resize of image (H, W, 3) to (new_h, new_w, 3); boxes scale per axis."""
    h, w = _size_of(image)
    if (h, w) == (new_h, new_w):
        return image, target
    # Antialiased bilinear: a plain bilinear downscale by 4 (after Expand) would alias.
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    out = F.interpolate(
        t[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
    )[0]
    scale = np.asarray([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    resized = out.permute(1, 2, 0).contiguous().numpy()
    return resized, _with(target, boxes=target["boxes"] * scale, size=(new_h, new_w))


class Resize(Transform):
    """Resize to a fixed (height, width), ignoring the aspect ratio (SSD training)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        return _resize(image, target, *self.size)


class ResizeKeepRatio(Transform):
    """Scale so the shorter side is ``size`` unless the longer side would exceed ``max_size``.

    The factor is ``min(size / short, max_size / long)``; output sides are rounded and
    boxes scale by the exact per-axis ratios of the rounded sides.
    """

    def __init__(self, size: int, max_size: int | None = None) -> None:
        self.size = size
        self.max_size = max_size

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        h, w = _size_of(image)
        scale = self.size / min(h, w)
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(h, w))
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        return _resize(image, target, new_h, new_w)


class Normalize(Transform):
    """(x - mean) / std per channel, statistics on the 0..255 scale."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        return (np.asarray(image, dtype=np.float32) - self.mean) / self.std, target


class ToTensor(Transform):
    """Array (H, W, 3) -> tensor (3, H, W) float32; boxes (G, 4) float32, labels (G,) long."""

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[Tensor, Target]:
        tensor = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32)))
        tensor = tensor.permute(2, 0, 1).contiguous()
        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
        out = _with(
            target,
            boxes=torch.from_numpy(np.ascontiguousarray(boxes)),
            labels=torch.from_numpy(np.ascontiguousarray(labels)),
            size=(int(tensor.shape[1]), int(tensor.shape[2])),
        )
        return tensor, out


AUGMENTS = ("ssd", "flip", "none")


def build_transforms(
    train: bool,
    size: int,
    augment: str = "ssd",
    *,
    max_ratio: float = 1.66,
    expand_ratio: float = 4.0,
    min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    min_crop_size: float = 0.3,
    flip_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> Compose:
    """The training or test pipeline of the paper's recipe.

    Training resizes to ``size`` x ``size``; ``augment`` adds before it either the SSD set
    (photometric distortion, expand 1..``expand_ratio``, min-IoU crop, flip), a flip only,
    or nothing. Testing ignores ``augment`` and scales the shorter side to ``size`` with the
    longer side at most ``max_ratio * size``. Both end normalised, as a tensor (3, H, W).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} is not one of {', '.join(AUGMENTS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels), got {size!r}")
    steps: list[Transform] = [ToArray()]
    if train:
        if augment == "ssd":
            steps += [
                PhotometricDistort(),
                Expand(mean=mean, max_ratio=expand_ratio),
                MinIoURandomCrop(min_ious=min_ious, min_crop_size=min_crop_size),
            ]
        if augment in ("ssd", "flip"):
            steps.append(RandomHorizontalFlip(flip_prob))
        steps.append(Resize(size))
    else:
        steps.append(ResizeKeepRatio(size, max_size=int(size * max_ratio)))
    steps += [Normalize(mean, std), ToTensor()]
    return Compose(steps, generator=generator)
