"""The built-in synthetic data set: coloured shapes on cluttered backgrounds, in COCO format.

It exists so that every experiment runs end to end on a CPU without a download, and so
that box quality shows in AP75/AP90: every ground-truth box is the exact tight box of the
object's *visible* pixels (objects drawn later may occlude earlier ones; a placement that
would hide more than ``1 - min_visible`` of an earlier object is rejected). Shapes are
drawn as hard (not anti-aliased) masks, so "tight" is exact to the pixel: a mask covering
columns ``x0..x1`` gives ``bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]`` (pixel edges). Clutter
(lines, scribbles, irregular blobs) is drawn on the background *before* the objects, so it
never changes a box; the final colour jitter and sensor noise act on every pixel alike.

Category ids are deliberately not contiguous (1, 2, 3, 5, 7, ...), as in real COCO, so the
id mapping of :class:`~alrp_lab.data.coco.CocoDetection` is exercised. The folder layout
and the atomic cache are :mod:`~alrp_lab.data.synthetic`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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

__all__ = ["SHAPE_CLASSES", "ShapesSplits", "build_shapes_dataset", "FORMAT_VERSION"]

# Bump when the drawing changes: a cache with another version is rebuilt.
FORMAT_VERSION = 1
_GENERATOR = f"{GENERATOR_PREFIX}shapes"

# (name, COCO category id): ids skip values on purpose, like COCO's 1..90 with gaps.
SHAPE_CLASSES: tuple[tuple[str, int], ...] = (
    ("rectangle", 1),
    ("ellipse", 2),
    ("triangle", 3),
    ("bar", 5),
    ("ring", 7),
    ("cross", 8),
    ("diamond", 11),
    ("star", 13),
)

# Width/height ratio range per class (log-uniform); "bar" is the elongated one and may be
# turned upright, so its boxes span ratios 1/8..1/3 and 3..8.
_ASPECT = {
    "rectangle": (0.5, 2.0),
    "ellipse": (0.5, 2.0),
    "triangle": (0.7, 1.4),
    "cross": (0.75, 1.33),
    "ring": (0.8, 1.25),
    "diamond": (0.6, 1.6),
    "bar": (3.0, 8.0),
    "star": (0.85, 1.15),
}

# The splits of a shapes cache (the name predates the second built-in set).
ShapesSplits = SyntheticSplits


# ----------------------------------------------------------------------------- masks


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, orient: int) -> np.ndarray:
    """Inside-test of a unit shape: u (h, w), v (h, w) in [-1, 1] -> bool (h, w)."""
    if name in ("rectangle", "bar"):
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if name == "ellipse":
        return u * u + v * v <= 1
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 1)) | ((av <= 0.33) & (au <= 1))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.55**2)
    if name == "triangle":
        # orient picks the apex side: up, down, left, right.
        a, b = [(u, v), (u, -v), (v, u), (v, -u)][orient]
        return (b >= -1) & (b <= 1) & (np.abs(a) <= (b + 1) / 2)
    if name == "star":
        # Five tips: the boundary radius peaks every 72 degrees (|cos(2.5 t)| has period 72).
        theta = np.arctan2(v, u) + np.pi / 2 + orient * 0.3
        boundary = 0.45 + 0.55 * np.abs(np.cos(2.5 * theta)) ** 2
        return np.hypot(u, v) <= boundary
    raise DataError(f"unknown shape {name!r}")


def _place(
    rng: np.random.Generator, name: str, image_size: int, min_frac: float, max_frac: float
) -> tuple[int, int, np.ndarray]:
    """Sample one shape's size, aspect and position; return (x0, y0, mask (h, w) bool)."""
    lo, hi = _ASPECT[name]
    aspect = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    longest = float(np.exp(rng.uniform(np.log(min_frac), np.log(max_frac)))) * image_size
    w, h = (longest, longest / aspect) if aspect >= 1 else (longest * aspect, longest)
    if name == "bar" and rng.random() < 0.5:
        w, h = h, w
    # Below 2 px a side has no recognisable form, whatever the class.
    w, h = max(2.0, w), max(2.0, h)
    orient = int(rng.integers(4))
    cx = rng.uniform(w / 2, image_size - w / 2)
    cy = rng.uniform(h / 2, image_size - h / 2)
    x0, x1 = int(np.floor(cx - w / 2)), int(np.ceil(cx + w / 2))
    y0, y1 = int(np.floor(cy - h / 2)), int(np.ceil(cy + h / 2))
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image_size), min(y1, image_size)
    # Pixel centres sit at +0.5; the unit shape spans [-1, 1] over the sampled w, h.
    u = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / (w / 2)
    v = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / (h / 2)
    return x0, y0, _shape_mask(name, u[None, :], v[:, None], orient)


# ------------------------------------------------------------------------ background


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A textured background: (s, s, 3) float32 in [0, 255]."""
    # Row and column coordinates broadcast to (s, s) only when combined.
    xx = (np.arange(s, dtype=np.float32) / s)[None, :]
    yy = xx.T
    c0, c1 = rng.uniform(30, 225, size=(2, 3)).astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:  # linear gradient
        ang = rng.uniform(0, 2 * np.pi)
        t = np.float32(np.cos(ang)) * xx + np.float32(np.sin(ang)) * yy
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        return c0 + (c1 - c0) * t
    if kind == 1:  # stripes
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.05, 0.3)
        arg = np.float32(np.cos(ang) / period) * xx + np.float32(np.sin(ang) / period) * yy
        wave = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi) * arg)
        return c0 + (c1 - c0) * np.float32(rng.uniform(0.2, 0.6)) * wave[..., None]
    # smooth noise: a coarse random grid upsampled bilinearly
    k = int(rng.integers(3, 9))
    grid = rng.uniform(30, 225, size=(k, k, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((s, s), Image.BILINEAR), dtype=np.float32)


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> np.ndarray:
    """Distractors that are not objects: lines, scribbles, irregular blobs (in place)."""
    s = img.shape[0]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = int(rng.integers(3))
        if kind == 0:
            pts = [tuple(float(p) for p in rng.uniform(0, s, size=2)) for _ in range(2)]
            draw.line(pts, fill=colour, width=int(rng.integers(1, 3)))
        elif kind == 1:
            start = rng.uniform(0, s, size=2)
            steps = rng.normal(0, s * 0.08, size=(int(rng.integers(3, 8)), 2))
            pts = np.clip(np.cumsum(np.vstack([start, steps]), axis=0), 0, s - 1)
            draw.line([tuple(p) for p in pts.tolist()], fill=colour, width=1)
        else:
            side = int(rng.integers(4, max(5, s // 8)))
            blob = np.asarray(
                Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8)).resize(
                    (side, side), Image.BILINEAR
                )
            )
            x, y = (int(p) for p in rng.integers(0, s - side, size=2))
            region = np.asarray(pil)[y : y + side, x : x + side].copy()
            region[blob > 150] = colour
            pil.paste(Image.fromarray(region), (x, y))
    return np.asarray(pil, dtype=np.float32)


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
) -> tuple[np.ndarray, list[DrawnObject], np.ndarray]:
    """Draw one image.

    Returns (pixels uint8 (s, s, 3), objects [(class index, bbox xywh, visible area)],
    instance map int16 (s, s) with 0 for background and k for the k-th object).
    """
    s = image_size
    img = _draw_clutter(rng, _background(rng, s), int(rng.integers(0, max_clutter + 1)))
    canvas = Occlusion(s, num_objects, min_visible)
    for _ in range(num_objects):
        for _attempt in range(10):
            cls = int(rng.integers(len(classes)))
            x0, y0, mask = _place(rng, classes[cls], s, min_frac, max_frac)
            if int(mask.sum()) < MIN_PIXELS:
                continue
            remaining = canvas.fits(x0, y0, mask)
            if remaining is None:
                continue
            h, w = mask.shape
            # A colour that stands out from what lies under the shape.
            under = img[y0 : y0 + h, x0 : x0 + w][mask].mean(axis=0)
            colour = rng.uniform(0, 255, size=3)
            for _ in range(8):
                if np.abs(colour - under).sum() > 120:
                    break
                colour = rng.uniform(0, 255, size=3)
            img[y0 : y0 + h, x0 : x0 + w][mask] = colour
            canvas.add(cls, x0, y0, mask, remaining)
            break
    return jitter_and_noise(rng, img), canvas.objects(), canvas.ids


def _write_split(
    out_dir: Path,
    ann_file: Path,
    split_code: int,
    num_images: int,
    params: dict[str, Any],
) -> None:
    categories = SHAPE_CLASSES[: params["num_classes"]]
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
        supercategory="shape",
        description="alrp-lab synthetic shapes",
        version=FORMAT_VERSION,
    )


def build_shapes_dataset(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_train: int = 1200,
    num_val: int = 200,
    image_size: int = 128,
    num_classes: int = 6,
    max_objects: int = 8,
    empty_fraction: float = 0.05,
    min_size: float = 0.06,
    max_size: float = 0.7,
    min_visible: float = 0.6,
    max_clutter: int = 6,
) -> ShapesSplits:
    """Generate (or reuse) the synthetic shapes set under ``root`` and return its paths.

    Args:
        root: cache folder; reused when its ``manifest.json`` records the same parameters
            and format version, rebuilt otherwise. ``~`` is expanded.
        seed: same seed and parameters give byte-identical annotation files and images.
        num_train, num_val: number of images per split (each >= 1).
        image_size: side of the square images in pixels (>= 32).
        num_classes: how many of :data:`SHAPE_CLASSES` to use (1..8), in that order.
        max_objects: objects per non-empty image are uniform in 1..max_objects.
        empty_fraction: probability of an image with no object (every split of two or more
            images gets at least one).
        min_size, max_size: the longest side of a shape, as a fraction of ``image_size``
            (log-uniform between them).
        min_visible: an object placed later may hide at most ``1 - min_visible`` of the
            pixels of an earlier one.
        max_clutter: distractors (lines, scribbles, blobs) per image are uniform in
            0..max_clutter.

    Returns:
        :class:`ShapesSplits` with the image folders and annotation files of both splits.
    """
    params = generation_params(
        "build_shapes_dataset",
        len(SHAPE_CLASSES),
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

    return build_cached(
        Path(root).expanduser(),
        generator=_GENERATOR,
        version=FORMAT_VERSION,
        params=params,
        # Looked up at call time, so tests can stand in for one split's writer.
        write_one=lambda *args: _write_split(*args),
    )
