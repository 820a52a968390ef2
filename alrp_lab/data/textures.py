"""The second built-in data set: textured objects with irregular outlines, in COCO format.

It is built to be unlike :mod:`~alrp_lab.data.shapes` in what a detector has to learn, so
that a backbone's transfer can be measured on something other than the set it was tuned
beside. In the shapes set a class *is* an outline and objects are flat colours; here:

- a class is a **texture** (stripes, checks, dots, rings, hatching, speckle, waves,
  blotches), drawn in two colours chosen per object, so neither outline nor colour tells
  the class;
- every outline is a random **star-convex silhouette** (a few harmonics of the radius),
  whatever the class, and the clutter drawn on the background is the same kind of
  silhouette in flat colour or background noise: an outline alone never makes an object;
- the background is **1/f noise** under a lighting gradient, each object has a lighting
  gradient of its own, and the whole image is **blurred** by a random Gaussian
  (sigma up to ``max_blur`` px) before the colour jitter and sensor noise.

Boxes are the tight boxes of each object's visible mask (occlusion as in the shapes set:
:class:`~alrp_lab.data.synthetic.Occlusion`), taken before the blur, which softens an edge
by under a pixel at the default ``max_blur``. Objects are at least ``min_size`` of the image
(15 px at 128) so that a few periods of their texture show.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from alrp_lab.data.synthetic import (
    GENERATOR_PREFIX,
    MIN_PIXELS,
    DrawnObject,
    Occlusion,
    SyntheticSplits,
    build_cached,
    generation_params,
    jitter_and_noise,
    write_split,
)
from alrp_lab.errors import DataError

__all__ = ["TEXTURE_CLASSES", "build_textures_dataset", "FORMAT_VERSION"]

# Bump when the drawing changes: a cache with another version is rebuilt.
FORMAT_VERSION = 1
_GENERATOR = f"{GENERATOR_PREFIX}textures"

# (name, COCO category id): ids skip values on purpose, as in the shapes set and COCO.
TEXTURE_CLASSES: tuple[tuple[str, int], ...] = (
    ("stripes", 1),
    ("checks", 2),
    ("dots", 3),
    ("rings", 5),
    ("hatching", 7),
    ("speckle", 8),
    ("waves", 11),
    ("blotches", 13),
)

# Harmonics of a silhouette's radius: r(t) = 1 + sum_k a_k cos(k t + phi_k), k = 2..5.
_HARMONICS = np.arange(2, 6, dtype=np.float32)
_RIM = np.linspace(0, 2 * np.pi, 256, endpoint=False, dtype=np.float32)


# ------------------------------------------------------------------------- textures


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates x (1, w), y (h, 1) turned by ``angle``: (a, b), each (h, w)."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * x + s * y, c * y - s * x


def _texture(rng: np.random.Generator, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One instance of a class's texture: x (1, w), y (h, 1) pixel offsets from the
    object's centre -> t (h, w) float32 in [0, 1], the mix between its two colours.

    Its features (a stripe, a check, a dot, a ring, a blob, a 2 px grain) are 2-9 px
    across, so an object 15 px long shows both colours (tested on 15 x 8 windows)."""
    a, b = _rotated(x, y, rng.uniform(0, np.pi))
    phase = np.float32(rng.uniform(0, 1))
    two_pi = np.float32(2 * np.pi)
    if name == "stripes":
        period = np.float32(rng.uniform(4, 7))
        return 0.5 + 0.5 * np.sin(two_pi * (a / period + phase))
    if name == "checks":
        cell = np.float32(rng.uniform(3, 6))
        return ((np.floor(a / cell + phase) + np.floor(b / cell)) % 2).astype(np.float32)
    if name == "dots":
        spacing = np.float32(rng.uniform(5, 8))
        fa = (a / spacing + phase) % 1 - 0.5
        fb = (b / spacing) % 1 - 0.5
        return (np.hypot(fa, fb) < 0.28).astype(np.float32)
    if name == "rings":
        period = np.float32(rng.uniform(4, 7))
        return 0.5 + 0.5 * np.sin(two_pi * (np.hypot(x, y) / period + phase))
    if name == "hatching":
        period = np.float32(rng.uniform(5, 8))
        line_a = np.abs((a / period + phase) % 1 - 0.5) < 0.14
        line_b = np.abs((b / period) % 1 - 0.5) < 0.14
        return (line_a | line_b).astype(np.float32)
    if name == "speckle":
        # Grains of 2 x 2 px: single pixels would be lost to the blur and sensor noise.
        h, w = np.broadcast_shapes(x.shape, y.shape)
        grains = rng.random(((h + 1) // 2, (w + 1) // 2)) < 0.25
        return grains.repeat(2, axis=0).repeat(2, axis=1)[:h, :w].astype(np.float32)
    if name == "waves":
        period = np.float32(rng.uniform(5, 8))
        amplitude = np.float32(rng.uniform(1.5, 3.0))
        wavelength = np.float32(rng.uniform(8, 14))
        bend = amplitude * np.sin(two_pi * b / wavelength)
        return 0.5 + 0.5 * np.sin(two_pi * ((a + bend) / period + phase))
    if name == "blotches":
        h, w = np.broadcast_shapes(x.shape, y.shape)
        # Blobs about one cell (4-6 px) across, whatever the window's size: a random grid
        # of that pitch, interpolated bilinearly at each pixel and thresholded.
        cell = np.float32(rng.uniform(4, 6))
        grid = rng.random((int(h / cell) + 3, int(w / cell) + 3), dtype=np.float32)
        ry = (np.arange(h, dtype=np.float32) / cell + np.float32(rng.uniform(0, 1)))[:, None]
        rx = (np.arange(w, dtype=np.float32) / cell + np.float32(rng.uniform(0, 1)))[None, :]
        i, j = ry.astype(np.int64), rx.astype(np.int64)
        fy, fx = ry - i, rx - j
        top = grid[i, j] * (1 - fx) + grid[i, j + 1] * fx
        bottom = grid[i + 1, j] * (1 - fx) + grid[i + 1, j + 1] * fx
        return ((top * (1 - fy) + bottom * fy) > 0.5).astype(np.float32)
    raise DataError(f"unknown texture {name!r}")


# ---------------------------------------------------------------------- silhouettes


def _silhouette(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A random star-convex outline: u (1, w), v (h, 1) in [-1, 1] -> inside, bool (h, w).

    The outline's extent is stretched onto the window, so it touches all four sides (to
    the pixel) and the object's box is the window's; its radius never falls under a
    quarter of its peak, so no lobe hangs by a thin neck."""
    amps = rng.uniform(0, 0.4, size=4).astype(np.float32) / (_HARMONICS - 1) ** 0.7
    phases = rng.uniform(0, 2 * np.pi, size=4).astype(np.float32)

    def raw(t: np.ndarray) -> np.ndarray:
        return 1 + (amps * np.cos(_HARMONICS * t[..., None] + phases)).sum(-1)

    raw_rim = raw(_RIM)
    floor = np.float32(0.25) * raw_rim.max()

    def radius(t: np.ndarray) -> np.ndarray:
        return np.maximum(raw(t), floor)

    rim = np.maximum(raw_rim, floor)
    rx, ry = rim * np.cos(_RIM), rim * np.sin(_RIM)
    # Map [-1, 1] onto the outline's own extent, which need not be centred.
    x = rx.min() + (u + 1) / 2 * (rx.max() - rx.min())
    y = ry.min() + (v + 1) / 2 * (ry.max() - ry.min())
    return np.hypot(x, y) <= radius(np.arctan2(y, x))


def _place(
    rng: np.random.Generator, image_size: int, min_frac: float, max_frac: float
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Sample a silhouette's size, aspect and position.

    Returns (x0, y0, mask (h, w) bool, x (1, w), y (h, 1)): x and y are the window's
    pixel-centre offsets from the silhouette's centre."""
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    longest = float(np.exp(rng.uniform(np.log(min_frac), np.log(max_frac)))) * image_size
    w, h = (longest, longest / aspect) if aspect >= 1 else (longest * aspect, longest)
    w, h = max(2.0, w), max(2.0, h)
    cx = rng.uniform(w / 2, image_size - w / 2)
    cy = rng.uniform(h / 2, image_size - h / 2)
    x0, x1 = max(int(np.floor(cx - w / 2)), 0), min(int(np.ceil(cx + w / 2)), image_size)
    y0, y1 = max(int(np.floor(cy - h / 2)), 0), min(int(np.ceil(cy + h / 2)), image_size)
    x = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    y = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    mask = _silhouette(rng, x / np.float32(w / 2), y / np.float32(h / 2))
    return x0, y0, mask, x, y


# ------------------------------------------------------------------------ background


def _pink_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """1/f^beta noise (beta 1-2, natural images' range): (h, w) float32 in [0, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amplitude = f ** (-rng.uniform(1.0, 2.0) / 2)
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, size=amplitude.shape)
    field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(h, w)).astype(np.float32)
    lo, hi = field.min(), field.max()
    return (field - lo) / max(float(hi - lo), 1e-6)


def _two_colours(rng: np.random.Generator, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours (3,) float32 at least ``min_distance`` apart in L1 (8 tries)."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    for _ in range(8):
        if np.abs(c0 - c1).sum() > min_distance:
            break
        c1 = rng.uniform(0, 255, size=3).astype(np.float32)
    return c0, c1


def _lighting(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """A linear gain across a region, up to 1 +- 0.3 per axis at its edges: (h, w, 1)."""
    gx, gy = rng.uniform(-0.3, 0.3, size=2).astype(np.float32)
    gain = 1 + (gx * x + gy * y) / np.float32(max(span, 1.0) / 2)
    return np.clip(gain, 0.4, 1.6)[..., None]


def _background(rng: np.random.Generator, s: int, max_clutter: int) -> np.ndarray:
    """1/f noise in two colours under a lighting gradient, then flat and noise-filled
    silhouettes that are not objects: (s, s, 3) float32."""
    c0, c1 = _two_colours(rng, 90)
    img = c0 + (c1 - c0) * _pink_noise(rng, s, s)[..., None]
    centre = (np.arange(s, dtype=np.float32) + 0.5 - s / 2)[None, :]
    img = img * _lighting(rng, centre, centre.T, s)
    for _ in range(int(rng.integers(0, max_clutter + 1))):
        x0, y0, mask, _x, _y = _place(rng, s, 0.08, 0.4)
        h, w = mask.shape
        if rng.random() < 0.5:
            fill = rng.uniform(0, 255, size=3).astype(np.float32)
        else:
            d0, d1 = _two_colours(rng, 90)
            fill = (d0 + (d1 - d0) * _pink_noise(rng, h, w)[..., None])[mask]
        img[y0 : y0 + h, x0 : x0 + w][mask] = fill
    return img


# ----------------------------------------------------------------------------- images


def _render_image(
    rng: np.random.Generator,
    image_size: int,
    classes: list[str],
    num_objects: int,
    min_frac: float,
    max_frac: float,
    min_visible: float,
    max_clutter: int,
    max_blur: float,
) -> tuple[np.ndarray, list[DrawnObject], np.ndarray]:
    """Draw one image.

    Returns (pixels uint8 (s, s, 3), objects [(class index, bbox xywh, visible area)],
    instance map int16 (s, s) with 0 for background and k for the k-th object).
    """
    s = image_size
    img = _background(rng, s, max_clutter)
    canvas = Occlusion(s, num_objects, min_visible)
    for _ in range(num_objects):
        for _attempt in range(10):
            cls = int(rng.integers(len(classes)))
            x0, y0, mask, x, y = _place(rng, s, min_frac, max_frac)
            if int(mask.sum()) < MIN_PIXELS:
                continue
            remaining = canvas.fits(x0, y0, mask)
            if remaining is None:
                continue
            h, w = mask.shape
            c0, c1 = _two_colours(rng, 200)
            t = _texture(rng, classes[cls], x, y)[..., None]
            pixels = (c0 + (c1 - c0) * t) * _lighting(rng, x, y, max(h, w))
            img[y0 : y0 + h, x0 : x0 + w][mask] = pixels[mask]
            canvas.add(cls, x0, y0, mask, remaining)
            break
    blurred = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0, max_blur)))
    )
    img = np.asarray(blurred, dtype=np.float32)
    return jitter_and_noise(rng, img), canvas.objects(), canvas.ids


def _write_split(
    out_dir: Path, ann_file: Path, split_code: int, num_images: int, params: dict[str, Any]
) -> None:
    categories = TEXTURE_CLASSES[: params["num_classes"]]
    names = [name for name, _ in categories]

    def render(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[DrawnObject]]:
        pixels, objects, _ = _render_image(
            rng,
            params["image_size"],
            names,
            n,
            params["min_size"],
            params["max_size"],
            params["min_visible"],
            params["max_clutter"],
            params["max_blur"],
        )
        return pixels, objects

    write_split(
        out_dir,
        ann_file,
        split_code=split_code,
        num_images=num_images,
        params=params,
        render=render,
        categories=categories,
        supercategory="texture",
        description="alrp-lab synthetic textures",
        version=FORMAT_VERSION,
    )


# ------------------------------------------------------------------------------ cache


def build_textures_dataset(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_train: int = 1200,
    num_val: int = 200,
    image_size: int = 128,
    num_classes: int = 6,
    max_objects: int = 6,
    empty_fraction: float = 0.05,
    min_size: float = 0.12,
    max_size: float = 0.6,
    min_visible: float = 0.6,
    max_clutter: int = 4,
    max_blur: float = 1.0,
) -> SyntheticSplits:
    """Generate (or reuse) the synthetic textures set under ``root`` and return its paths.

    Args:
        root: cache folder; reused when its ``manifest.json`` records the same parameters
            and format version, rebuilt otherwise. ``~`` is expanded.
        seed: same seed and parameters give byte-identical annotation files and images.
        num_train, num_val: number of images per split (each >= 1).
        image_size: side of the square images in pixels (>= 32).
        num_classes: how many of :data:`TEXTURE_CLASSES` to use (1..8), in that order.
        max_objects: objects per non-empty image are uniform in 1..max_objects.
        empty_fraction: probability of an image with no object (every split of two or more
            images gets at least one).
        min_size, max_size: the longest side of an object's window, as a fraction of
            ``image_size`` (log-uniform between them).
        min_visible: an object placed later may hide at most ``1 - min_visible`` of the
            pixels of an earlier one.
        max_clutter: silhouettes that are not objects per image, uniform in 0..max_clutter.
        max_blur: the image's Gaussian blur sigma is uniform in [0, max_blur] pixels.

    Returns:
        :class:`~alrp_lab.data.synthetic.SyntheticSplits` of both splits.
    """
    params = generation_params(
        "build_textures_dataset",
        len(TEXTURE_CLASSES),
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        num_classes=num_classes,
        max_objects=max_objects,
        empty_fraction=empty_fraction,
        min_size=min_size,
        max_size=max_size,
        min_visible=min_visible,
        max_clutter=max_clutter,
    )
    if max_blur < 0.0:
        raise DataError(f"build_textures_dataset: max_blur must be >= 0, got {max_blur}")
    params["max_blur"] = float(max_blur)

    return build_cached(
        Path(root).expanduser(),
        generator=_GENERATOR,
        version=FORMAT_VERSION,
        params=params,
        # Looked up at call time, so tests can stand in for one split's writer.
        write_one=lambda *args: _write_split(*args),
    )
