from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alrp_lab.data import shapes
from alrp_lab.data.coco import CocoDetection
from alrp_lab.data.shapes import SHAPE_CLASSES, build_shapes_dataset

# sha256 over (relative path + bytes) of every file of the 48 px build in the test below.
GOLDEN_V1 = "b2ceab9256c76af7f1d97f3b4b6fa106b5e8045e70832b4845af08d908bb4e72"
SMALL = {"seed": 3, "num_train": 12, "num_val": 5, "image_size": 64, "num_classes": 5}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> shapes.ShapesSplits:
    return build_shapes_dataset(tmp_path_factory.mktemp("shapes") / "cache", **SMALL)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_layout_and_counts(built: shapes.ShapesSplits) -> None:
    train, val = _load(built.train_ann), _load(built.val_ann)
    assert len(train["images"]) == 12 and len(val["images"]) == 5
    for split, folder in ((train, built.train_images), (val, built.val_images)):
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            img["file_name"] for img in split["images"]
        )
        ids = [a["id"] for a in split["annotations"]]
        assert len(set(ids)) == len(ids)
    manifest = _load(built.train_images.parent / "manifest.json")
    assert manifest["params"]["seed"] == 3 and manifest["version"] == shapes.FORMAT_VERSION


def test_declared_classes_with_non_contiguous_ids(built: shapes.ShapesSplits) -> None:
    cats = _load(built.train_ann)["categories"]
    assert [c["name"] for c in cats] == ["rectangle", "ellipse", "triangle", "bar", "ring"]
    ids = [c["id"] for c in cats]
    assert ids == [cid for _, cid in SHAPE_CLASSES[:5]] and ids != list(range(1, 6))
    used = {a["category_id"] for a in _load(built.train_ann)["annotations"]}
    assert used <= set(ids)


def test_boxes_inside_image_and_empty_images_in_both_splits(built: shapes.ShapesSplits) -> None:
    for ann_file in (built.train_ann, built.val_ann):
        data = _load(ann_file)
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and w >= 1 and h >= 1
            assert x + w <= 64 and y + h <= 64
            assert 4 <= a["area"] <= w * h and a["iscrowd"] == 0
            assert all(float(v).is_integer() for v in a["bbox"])  # pixel-edge boxes
        annotated = {a["image_id"] for a in data["annotations"]}
        assert any(img["id"] not in annotated for img in data["images"])


def test_boxes_are_tight_around_visible_pixels() -> None:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    names = [name for name, _ in SHAPE_CLASSES]
    pixels, objects, ids = shapes._render_image(rng, 96, names, 8, 0.06, 0.7, 0.6, 4)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    assert len(objects) == ids.max() >= 1, f"seed {seed}"
    for k, (_cls, (x, y, w, h), area) in enumerate(objects, start=1):
        rows, cols = np.nonzero(ids == k)
        assert (x, y) == (cols.min(), rows.min()), f"seed {seed}"
        assert (x + w - 1, y + h - 1) == (cols.max(), rows.max()), f"seed {seed}"
        assert area == len(rows)


def test_shapes_span_sizes_and_aspect_ratios() -> None:
    rng = np.random.default_rng(0)
    longest, ratios = [], []
    for name, _ in SHAPE_CLASSES:
        for _ in range(30):
            x0, y0, mask = shapes._place(rng, name, 200, 0.06, 0.7)
            rows, cols = np.nonzero(mask)
            w, h = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
            longest.append(max(w, h) / 200)
            ratios.append(w / h)
            assert x0 + mask.shape[1] <= 200 and y0 + mask.shape[0] <= 200
    assert min(longest) < 0.1 and max(longest) > 0.5
    assert min(ratios) < 1 / 3 and max(ratios) > 3  # bars, upright and flat


def test_the_generated_bytes_are_those_of_format_version_1(tmp_path: Path) -> None:
    """A change to the drawing (or to the shared writer) must bump FORMAT_VERSION: the
    committed results were trained on these bytes and every machine's cache holds them."""
    import hashlib

    root = tmp_path / "c"
    build_shapes_dataset(root, seed=0, num_train=4, num_val=2, image_size=48, num_classes=6)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    assert shapes.FORMAT_VERSION == 1
    assert digest.hexdigest() == GOLDEN_V1


def test_same_seed_gives_identical_files(tmp_path: Path, built: shapes.ShapesSplits) -> None:
    again = build_shapes_dataset(tmp_path / "again", **SMALL)
    assert again.train_ann.read_bytes() == built.train_ann.read_bytes()
    assert again.val_ann.read_bytes() == built.val_ann.read_bytes()
    name = "000002.png"
    assert (again.train_images / name).read_bytes() == (built.train_images / name).read_bytes()
    other = build_shapes_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert other.train_ann.read_bytes() != built.train_ann.read_bytes()


def test_cache_is_reused_and_rebuilt_when_parameters_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    first = build_shapes_dataset(root, **{**SMALL, "num_train": 3, "num_val": 2})

    def no_writes(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    with monkeypatch.context() as m:
        m.setattr(shapes, "_write_split", no_writes)
        assert build_shapes_dataset(root, **{**SMALL, "num_train": 3, "num_val": 2}) == first
    rebuilt = build_shapes_dataset(root, **{**SMALL, "num_train": 4, "num_val": 2})
    assert rebuilt == first and len(_load(rebuilt.train_ann)["images"]) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interrupted_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shapes._write_split
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes, "_write_split", fail_second)
    with pytest.raises(KeyboardInterrupt):
        build_shapes_dataset(tmp_path / "cache", **{**SMALL, "num_train": 2, "num_val": 2})
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a built-in data cache"):
        build_shapes_dataset(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_classes": 9}, "num_classes must be in 1..8"),
        ({"num_train": 0}, "num_train and num_val"),
        ({"image_size": 16}, "image_size must be at least 32"),
    ],
)
def test_bad_parameters(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_shapes_dataset(tmp_path / "x", **{**SMALL, **override})


def test_reads_back_through_coco_detection(built: shapes.ShapesSplits) -> None:
    ds = CocoDetection(built.train_images, built.train_ann)
    assert len(ds) == 12 and ds.num_classes == 5
    assert ds.label_to_category_id == [1, 2, 3, 5, 7]
    image, target = ds[0]
    assert image.shape == (3, 64, 64)
    anns = [a for a in _load(built.train_ann)["annotations"] if a["image_id"] == ds.ids[0]]
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    torch.testing.assert_close(target["boxes"], expected.reshape(-1, 4).float())
