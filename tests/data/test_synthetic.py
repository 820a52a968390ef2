from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alrp_lab.data import synthetic


def test_occlusion_keeps_every_earlier_object_visible_and_its_box_tight() -> None:
    canvas = synthetic.Occlusion(16, max_objects=3, min_visible=0.5)
    square = np.ones((6, 6), dtype=bool)
    remaining = canvas.fits(2, 2, square)
    assert remaining is not None
    canvas.add(0, 2, 2, square, remaining)
    # Hides 3 of the square's 36 pixels (half its right column): allowed.
    corner = np.ones((3, 1), dtype=bool)
    remaining = canvas.fits(7, 5, corner)
    assert remaining is not None and remaining[1:].tolist() == [33]  # [0]: the background
    canvas.add(1, 7, 5, corner, remaining)
    # Would hide 30 of the first square's 36 pixels: refused, and nothing changes.
    assert canvas.fits(0, 0, np.ones((8, 8), dtype=bool)) is None
    first, second = canvas.objects()
    assert first == (0, [2.0, 2.0, 6.0, 6.0], 33.0)  # the occluded column stays in the box
    assert second == (1, [7.0, 5.0, 1.0, 3.0], 3.0)
    assert int((canvas.ids == 1).sum()) == 33


def test_write_split_gives_each_image_its_own_stream(tmp_path: Path) -> None:
    seen: list[tuple[float, int]] = []

    def render(rng: np.random.Generator, n: int):
        seen.append((float(rng.random()), n))
        return np.zeros((8, 8, 3), np.uint8), [(1, [0.0, 0.0, 2.0, 2.0], 4.0)] * n

    common = dict(
        num_images=3,
        params={"seed": 5, "image_size": 8, "empty_fraction": 0.0, "max_objects": 2},
        render=render,
        categories=[("a", 4), ("b", 9)],
        supercategory="test",
        description="test",
        version=1,
    )
    synthetic.write_split(tmp_path / "a", tmp_path / "a.json", split_code=0, **common)
    # Image k draws from default_rng([seed, split, k]) alone: its object count, then what
    # the renderer draws.
    for k, (draw, n) in enumerate(seen):
        rng = np.random.default_rng([5, 0, k])
        rng.random()  # the empty-image draw
        expected_n = int(rng.integers(1, 3))
        assert draw == rng.random()
        assert n == (0 if k == 2 else expected_n)  # the last is made empty when none was
    first = [draw for draw, _ in seen]
    seen.clear()
    synthetic.write_split(tmp_path / "b", tmp_path / "b.json", split_code=1, **common)
    assert not set(first) & {draw for draw, _ in seen}  # the other split draws other images
    data = json.loads((tmp_path / "a.json").read_text())
    assert {a["category_id"] for a in data["annotations"]} == {9}
    assert [c["id"] for c in data["categories"]] == [4, 9]


def test_publish_when_another_process_won_or_cache_is_stale(tmp_path: Path) -> None:
    root, tmp = tmp_path / "cache", tmp_path / ".cache.building"
    root.mkdir()
    (root / "theirs").write_text("published first")
    tmp.mkdir()
    (tmp / "ours").write_text("late")
    # The other process's copy is current: keep it, discard ours.
    synthetic.publish(tmp, root, lambda r: True)
    assert (root / "theirs").exists() and not tmp.exists()
    # The copy in place is stale: ours replaces it whole.
    tmp.mkdir()
    (tmp / "ours").write_text("fresh")
    synthetic.publish(tmp, root, lambda r: False)
    assert sorted(p.name for p in root.iterdir()) == ["ours"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_cache_of_another_generator_is_rebuilt_not_reused(tmp_path: Path) -> None:
    written = []

    def write(image_dir: Path, ann_file: Path, split_code: int, n: int, params: dict) -> None:
        written.append((split_code, n))
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        ann_file.write_text("{}")
        image_dir.mkdir()

    params = {"seed": 0, "num_train": 3, "num_val": 2}
    for generator in ("alrp-lab shapes", "alrp-lab shapes", "alrp-lab textures"):
        synthetic.build_cached(
            tmp_path / "c", generator=generator, version=1, params=params, write_one=write
        )
    assert written == [(0, 3), (1, 2)] * 2  # built, reused, rebuilt for the other generator
    manifest = synthetic.read_manifest(tmp_path / "c")
    assert manifest is not None and manifest["generator"] == "alrp-lab textures"
    with pytest.raises(ValueError, match="not a built-in data cache"):
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "notes.txt").write_text("mine")
        synthetic.build_cached(
            tmp_path / "foreign",
            generator="alrp-lab shapes",
            version=1,
            params=params,
            write_one=write,
        )
