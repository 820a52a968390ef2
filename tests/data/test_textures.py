from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alrp_lab.data import textures
from alrp_lab.data.coco import CocoDetection
from alrp_lab.data.textures import TEXTURE_CLASSES, build_textures_dataset

SMALL = {"seed": 3, "num_train": 10, "num_val": 4, "image_size": 64, "num_classes": 5}
NAMES = [name for name, _ in TEXTURE_CLASSES]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> textures.SyntheticSplits:
    return build_textures_dataset(tmp_path_factory.mktemp("textures") / "cache", **SMALL)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_layout_classes_and_read_back(built: textures.SyntheticSplits) -> None:
    train, val = _load(built.train_ann), _load(built.val_ann)
    assert len(train["images"]) == 10 and len(val["images"]) == 4
    assert [c["id"] for c in train["categories"]] == [1, 2, 3, 5, 7]
    assert [c["name"] for c in train["categories"]] == NAMES[:5]
    ds = CocoDetection(built.train_images, built.train_ann)
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and target["boxes"].shape[-1] == 4
    for data in (train, val):  # every split holds an image without objects
        with_objects = {a["image_id"] for a in data["annotations"]}
        assert len(with_objects) < len(data["images"])


def test_boxes_are_tight_around_visible_pixels() -> None:
    for index in range(6):
        rng = np.random.default_rng([1, 0, index])
        pixels, objects, ids = textures._render_image(rng, 96, NAMES, 6, 0.12, 0.6, 0.6, 4, 1.0)
        assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
        assert len(objects) >= 1
        for k, (_cls, (x, y, w, h), area) in enumerate(objects, start=1):
            rows, cols = np.nonzero(ids == k)
            assert (x, y) == (cols.min(), rows.min())
            assert (x + w - 1, y + h - 1) == (cols.max(), rows.max())
            assert area == len(rows)


@pytest.mark.parametrize(("h", "w"), [(15, 8), (8, 15)])
def test_every_texture_shows_both_colours_on_the_smallest_objects(h: int, w: int) -> None:
    """At min_size (15 px long at 128, 8 px wide at the widest aspect) each class's texture
    still mixes its two colours, so a class can be told from its pixels."""
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2)[None, :]
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None]
    for name in NAMES:
        shown = 0
        for seed in range(40):
            t = textures._texture(np.random.default_rng([seed]), name, x, y)
            assert t.shape == (h, w) and 0.0 <= t.min() and t.max() <= 1.0
            shown += (t < 0.2).mean() > 0.05 and (t > 0.8).mean() > 0.05
        assert shown >= 36, name  # 90%: a blotch may cover a whole 8 px wide object


def test_objects_fill_their_windows_and_keep_min_size() -> None:
    """The silhouette is stretched onto its window, so the box is the sampled size."""
    longest = []
    for index in range(100):
        rng = np.random.default_rng([2, 0, index])
        _x0, _y0, mask, _x, _y = textures._place(rng, 128, 0.12, 0.6)
        rows, cols = np.nonzero(mask)
        assert cols.min() <= 1 and cols.max() >= mask.shape[1] - 2
        assert rows.min() <= 1 and rows.max() >= mask.shape[0] - 2
        longest.append(max(cols.max() - cols.min(), rows.max() - rows.min()) + 1)
    assert min(longest) >= 0.12 * 128 - 1 and max(longest) <= 0.6 * 128 + 2


def test_the_outline_does_not_tell_the_class() -> None:
    """Silhouettes are drawn the same way for every class: their per-class statistics
    (fill of the box, aspect) agree within sampling noise."""
    fill: dict[int, list[float]] = {c: [] for c in range(6)}
    aspect: dict[int, list[float]] = {c: [] for c in range(6)}
    for index in range(120):
        rng = np.random.default_rng([7, 0, index])
        _, objects, _ = textures._render_image(rng, 128, NAMES[:6], 5, 0.12, 0.6, 1.0, 0, 0.0)
        for cls, (_x, _y, w, h), area in objects:
            fill[cls].append(area / (w * h))  # min_visible=1: nothing is occluded
            aspect[cls].append(np.log(w / h))
    means = [np.mean(fill[c]) for c in range(6)]
    assert min(len(fill[c]) for c in range(6)) > 50
    assert max(means) - min(means) < 0.04, means
    assert max(abs(np.mean(aspect[c])) for c in range(6)) < 0.15


def test_same_seed_gives_identical_files(tmp_path: Path, built: textures.SyntheticSplits) -> None:
    again = build_textures_dataset(tmp_path / "again", **SMALL)
    assert again.train_ann.read_bytes() == built.train_ann.read_bytes()
    name = "000002.png"
    assert (again.train_images / name).read_bytes() == (built.train_images / name).read_bytes()
    other = build_textures_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert other.train_ann.read_bytes() != built.train_ann.read_bytes()


def test_a_shapes_cache_at_the_same_folder_is_replaced(tmp_path: Path) -> None:
    from alrp_lab.data.shapes import build_shapes_dataset

    small = {**SMALL, "num_train": 2, "num_val": 2}
    build_shapes_dataset(tmp_path / "c", **small)
    splits = build_textures_dataset(tmp_path / "c", **small)
    assert [c["name"] for c in _load(splits.train_ann)["categories"]] == NAMES[:5]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_classes": 9}, "num_classes must be in 1..8"),
        ({"image_size": 16}, "image_size must be at least 32"),
        ({"max_blur": -1.0}, "max_blur must be >= 0"),
    ],
)
def test_bad_parameters(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_textures_dataset(tmp_path / "x", **{**SMALL, **override})
