"""What the built-in synthetic data sets share: occlusion bookkeeping, COCO writing, the cache.

Each generator (:mod:`~alrp_lab.data.shapes`, :mod:`~alrp_lab.data.textures`) draws its
own objects; this module turns drawn masks into tight boxes of their *visible* pixels,
writes the splits in COCO format and publishes the finished folder atomically.

Layout written under ``root``::

    manifest.json                     generator, format version, generation parameters
    train/000001.png ...              images
    val/000001.png ...
    annotations/instances_train.json  COCO: images, annotations, categories
    annotations/instances_val.json

The folder is built in a temporary sibling and published with one ``rename``, so an
interrupted build never leaves a half cache and two processes building at once agree.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from alrp_lab.errors import DataError, RunError

__all__ = [
    "GENERATOR_PREFIX",
    "MIN_PIXELS",
    "DrawnObject",
    "Occlusion",
    "SyntheticSplits",
    "build_cached",
    "generation_params",
    "jitter_and_noise",
    "publish",
    "read_manifest",
    "splits_of",
    "write_split",
]

# Every built-in set's manifest names its generator "alrp-lab NAME": a cache of one set may
# be replaced by another's, never a folder of anyone else's.
GENERATOR_PREFIX = "alrp-lab "

# Fewest pixels an object may show: below this no object is recognisable.
MIN_PIXELS = 4

# One drawn object: (class index, bbox [x, y, w, h] in pixel edges, visible pixel count).
DrawnObject = tuple[int, list[float], float]
# Draws one image with n objects: (rng, n) -> (pixels uint8 (s, s, 3), objects).
Renderer = Callable[[np.random.Generator, int], tuple[np.ndarray, list[DrawnObject]]]


class SyntheticSplits(NamedTuple):
    """Where the generated splits live: image folders and COCO annotation files."""

    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path


def splits_of(root: Path) -> SyntheticSplits:
    """The split paths under a cache folder ``root`` (whether built or not)."""
    ann = root / "annotations"
    return SyntheticSplits(
        root / "train", ann / "instances_train.json", root / "val", ann / "instances_val.json"
    )


# ------------------------------------------------------------------------ occlusion


class Occlusion:
    """Which object owns each pixel of one image, as objects are drawn back to front (each
    new one on top).

    A later object may hide at most ``1 - min_visible`` of every earlier one's pixels, and
    never leave one with fewer than :data:`MIN_PIXELS`, so every object keeps a box.
    """

    def __init__(self, image_size: int, max_objects: int, min_visible: float) -> None:
        self.ids = np.zeros((image_size, image_size), dtype=np.int16)  # 0 = background
        self.full: list[int] = [0]  # unoccluded pixel count per object id (1-based)
        self.visible = np.zeros(max_objects + 1, dtype=np.int64)
        self.labels: list[int] = []
        self.windows: list[tuple[int, int, int, int]] = []  # (x0, y0, w, h) of each mask
        self.min_visible = min_visible

    def fits(self, x0: int, y0: int, mask: np.ndarray) -> np.ndarray | None:
        """The earlier objects' visible counts once ``mask`` (h, w) at (x0, y0) is drawn
        over them, or None when that would hide too much of one."""
        h, w = mask.shape
        window = self.ids[y0 : y0 + h, x0 : x0 + w]
        covered = np.bincount(window[mask], minlength=len(self.full))
        remaining = self.visible[: len(self.full)] - covered
        needed = np.maximum(self.min_visible * np.asarray(self.full[1:]), MIN_PIXELS)
        return None if np.any(remaining[1:] < needed) else remaining

    def add(self, cls: int, x0: int, y0: int, mask: np.ndarray, remaining: np.ndarray) -> None:
        """Record ``mask`` (h, w) at (x0, y0) as the next object, of class index ``cls``;
        ``remaining`` is what :meth:`fits` returned for it."""
        h, w = mask.shape
        k = len(self.full)
        self.ids[y0 : y0 + h, x0 : x0 + w][mask] = k
        self.visible[: len(self.full)] = remaining
        area = int(mask.sum())
        self.visible[k] = area
        self.full.append(area)
        self.labels.append(cls)
        self.windows.append((x0, y0, w, h))

    def objects(self) -> list[DrawnObject]:
        """Every drawn object's class, tight box of its visible pixels, and visible area."""
        out = []
        for k, (cls, (wx, wy, ww, wh)) in enumerate(
            zip(self.labels, self.windows, strict=True), start=1
        ):
            # Occluders only remove pixels, so the visible ones lie inside the drawn window.
            m = self.ids[wy : wy + wh, wx : wx + ww] == k
            cols = np.flatnonzero(m.any(axis=0))
            rows = np.flatnonzero(m.any(axis=1))
            x0, x1 = wx + int(cols[0]), wx + int(cols[-1])
            y0, y1 = wy + int(rows[0]), wy + int(rows[-1])
            bbox = [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]
            out.append((cls, bbox, float(self.visible[k])))
        return out


# -------------------------------------------------------------------------- pixels


def jitter_and_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """The last step of every built-in image: float (s, s, 3) -> uint8 (s, s, 3).

    A colour jitter (gain 0.75-1.25, offset +-25) and Gaussian sensor noise (sigma up to
    8) act on every pixel alike, so masks (and boxes) stay put."""
    alpha = rng.uniform(0.75, 1.25)
    beta = rng.uniform(-25, 25)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0, 8))
    img = img * np.float32(alpha) + np.float32(beta) + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ parameters


def generation_params(
    builder: str,
    known_classes: int,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    image_size: int,
    num_classes: int,
    max_objects: int,
    empty_fraction: float,
    min_size: float,
    max_size: float,
    min_visible: float,
    max_clutter: int,
) -> dict[str, Any]:
    """Check the parameters every built-in set takes and return them as its manifest
    records them (plain ints and floats). ``builder`` names the function in errors;
    ``known_classes`` is how many classes the set can draw."""
    checks = [
        (num_train >= 1 and num_val >= 1, "num_train and num_val must be at least 1"),
        (image_size >= 32, f"image_size must be at least 32 pixels, got {image_size}"),
        (
            1 <= num_classes <= known_classes,
            f"num_classes must be in 1..{known_classes}, got {num_classes}",
        ),
        (max_objects >= 1, f"max_objects must be at least 1, got {max_objects}"),
        (0.0 <= empty_fraction <= 1.0, "empty_fraction must be in [0, 1]"),
        (0.0 < min_size <= max_size <= 1.0, "need 0 < min_size <= max_size <= 1"),
        (0.0 <= min_visible <= 1.0, "min_visible must be in [0, 1]"),
        (max_clutter >= 0, "max_clutter must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise DataError(f"{builder}: {message}")
    return {
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "num_classes": int(num_classes),
        "max_objects": int(max_objects),
        "empty_fraction": float(empty_fraction),
        "min_size": float(min_size),
        "max_size": float(max_size),
        "min_visible": float(min_visible),
        "max_clutter": int(max_clutter),
    }


# ------------------------------------------------------------------------------ COCO


def write_split(
    out_dir: Path,
    ann_file: Path,
    *,
    split_code: int,
    num_images: int,
    params: dict[str, Any],
    render: Renderer,
    categories: Sequence[tuple[str, int]],
    supercategory: str,
    description: str,
    version: int,
) -> None:
    """Draw ``num_images`` images with ``render`` into ``out_dir`` and their COCO file.

    ``params`` are the set's generation parameters (:func:`generation_params`). Each image
    has its own random stream, ``default_rng([seed, split_code, index])``, so an image
    depends only on those three numbers. Objects per image: none with probability
    ``empty_fraction``, else uniform in 1..max_objects; every split of two or more images
    gets at least one image without objects, as COCO has.
    """
    seed, image_size = params["seed"], params["image_size"]
    empty_fraction, max_objects = params["empty_fraction"], params["max_objects"]
    out_dir.mkdir(parents=True)
    images, annotations = [], []
    any_empty = False
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_code, index])
        n = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
        if index == num_images - 1 and num_images >= 2 and not any_empty:
            n = 0
        any_empty |= n == 0
        pixels, objects = render(rng, n)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        # compress_level=1: generation speed matters more than cache size here.
        Image.fromarray(pixels).save(out_dir / file_name, format="PNG", compress_level=1)
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for cls, bbox, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[cls][1],
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    data = {
        "info": {"description": description, "version": str(version)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": supercategory} for name, cid in categories
        ],
    }
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data, separators=(",", ":")))


# ------------------------------------------------------------------------------ cache


def read_manifest(root: Path) -> dict[str, Any] | None:
    """``root/manifest.json`` as a dict, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_valid_cache(root: Path, generator: str, version: int, params: dict[str, Any]) -> bool:
    manifest = read_manifest(root)
    if manifest is None or manifest.get("version") != version:
        return False
    if manifest.get("generator") != generator or manifest.get("params") != params:
        return False
    return all(p.exists() for p in splits_of(root))


def _is_replaceable(root: Path) -> bool:
    """True when ``root`` is absent, empty, or a cache of one of the built-in sets."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    manifest = read_manifest(root)
    generator = manifest.get("generator") if manifest is not None else None
    if isinstance(generator, str) and generator.startswith(GENERATOR_PREFIX):
        return True
    return not any(root.iterdir())


def publish(tmp: Path, root: Path, is_current: Callable[[Path], bool]) -> None:
    """Move the finished ``tmp`` to ``root`` with one rename; a stale ``root`` goes first."""
    for _ in range(5):
        try:
            os.rename(tmp, root)  # atomic; fails when root is a non-empty directory
            return
        except OSError:
            if is_current(root):  # another process published the same data first
                shutil.rmtree(tmp, ignore_errors=True)
                return
            trash = root.with_name(f".{root.name}.stale-{uuid.uuid4().hex[:12]}")
            try:
                os.rename(root, trash)
            except FileNotFoundError:
                pass  # someone else moved it aside already
            shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    raise RunError(f"could not publish the data set to {root}; remove it and retry")


def build_cached(
    root: Path,
    *,
    generator: str,
    version: int,
    params: dict[str, Any],
    write_one: Callable[[Path, Path, int, int, dict[str, Any]], None],
) -> SyntheticSplits:
    """Reuse ``root`` when its manifest records ``generator``, ``version`` and ``params``;
    otherwise build it in a temporary folder and publish it. ``write_one(image_dir,
    ann_file, split_code, num_images, params)`` writes one split: the train split is code
    0 with ``params["num_train"]`` images, the val split code 1 with ``num_val``.
    """
    if _is_valid_cache(root, generator, version, params):
        return splits_of(root)
    if not generator.startswith(GENERATOR_PREFIX):
        raise ValueError(f"a generator's name starts with {GENERATOR_PREFIX!r}: {generator!r}")
    if not _is_replaceable(root):
        raise DataError(
            f"{root} exists and is not a built-in data cache (no manifest.json of ours); "
            "point data.root at an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        splits = splits_of(tmp)
        write_one(splits.train_images, splits.train_ann, 0, params["num_train"], params)
        write_one(splits.val_images, splits.val_ann, 1, params["num_val"], params)
        # Written last: a folder with a manifest is a finished one.
        manifest = {"generator": generator, "version": version, "params": params}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, root, lambda r: _is_valid_cache(r, generator, version, params))
    return splits_of(root)
