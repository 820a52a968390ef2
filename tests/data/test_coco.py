from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alrp_lab.data.coco import CocoDetection, coco_paths, load_coco_annotations
from alrp_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

from .conftest import CocoSet


def _by_id(ds: CocoDetection, image_id: int):
    return ds[ds.ids.index(image_id)]


def test_category_mapping_is_sorted_and_contiguous(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    assert ds.num_classes == 3
    assert ds.label_to_category_id == [3, 7, 10]
    assert ds.category_id_to_label == {3: 0, 7: 1, 10: 2}
    assert len(ds) == 3 and ds.ids == [1, 2, 3]


def test_target_of_png_drops_crowd_and_maps_labels(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    image, target = _by_id(ds, 1)
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0], [20.5, 10.0, 25.0, 18.0]])
    )
    assert target["labels"].tolist() == [1, 2]
    assert target["image_id"] == 1
    assert target["orig_size"] == (30, 40) and target["size"] == (30, 40)
    # Default transform: normalised with the ImageNet statistics, pixel by pixel.
    raw = torch.from_numpy(coco_set.pixels[1]).permute(2, 0, 1).double()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(image.double(), (raw - mean) / std, rtol=0, atol=1e-5)


def test_jpeg_image_clips_boxes_and_drops_degenerate(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    image, target = _by_id(ds, 2)
    assert image.shape == (3, 24, 32)
    torch.testing.assert_close(target["boxes"], torch.tensor([[30.0, 20.0, 32.0, 24.0]]))
    assert target["labels"].tolist() == [0]


def test_image_without_annotations_gives_empty_target(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    image, target = _by_id(ds, 3)
    assert image.shape == (3, 20, 20)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_crowd_kept_on_request_and_empty_images_skipped(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file, skip_crowd=False)
    _, target = _by_id(ds, 1)
    assert target["labels"].tolist() == [1, 2, 0]
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file, skip_empty=True)
    assert ds.ids == [1, 2]


def test_transforms_receive_pil_and_numpy_targets(coco_set: CocoSet) -> None:
    seen = {}

    def transform(image, target):
        seen["image"], seen["boxes"] = image, target["boxes"]
        return torch.zeros(3, 7, 9), target

    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file, transforms=transform)
    _, target = _by_id(ds, 1)
    assert isinstance(seen["image"], Image.Image) and seen["image"].size == (40, 30)
    assert isinstance(seen["boxes"], np.ndarray) and seen["boxes"].shape == (2, 4)
    # Numpy boxes come back as tensors and size follows the transformed image.
    assert isinstance(target["boxes"], torch.Tensor) and target["size"] == (7, 9)


def test_with_build_transforms_boxes_follow_resize(coco_set: CocoSet) -> None:
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file, build_transforms(False, 60))
    image, target = _by_id(ds, 1)
    assert image.shape == (3, 60, 80) and target["size"] == (60, 80)
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[4.0, 6.0, 24.0, 16.0], [41.0, 20.0, 50.0, 36.0]])
    )
    assert target["orig_size"] == (30, 40)


# ------------------------------------------------------------------------------ errors


def test_missing_image_folder(coco_set: CocoSet, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder .*nowhere"):
        CocoDetection(tmp_path / "nowhere", coco_set.ann_file)


def test_missing_annotation_file(coco_set: CocoSet, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotation file .*missing.json not found"):
        CocoDetection(coco_set.image_dir, tmp_path / "missing.json")


def test_annotation_file_that_is_not_json(coco_set: CocoSet) -> None:
    bad = coco_set.ann_file.with_name("bad.json")
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="bad.json is not readable JSON"):
        CocoDetection(coco_set.image_dir, bad)


@pytest.mark.parametrize("content", [[1, 2], {"images": [], "annotations": []}])
def test_annotation_file_that_is_not_coco(coco_set: CocoSet, content) -> None:
    path = coco_set.write_ann(content)
    with pytest.raises(ValueError, match="not COCO detection format.*categories"):
        load_coco_annotations(path)


def test_category_id_mismatch(coco_set: CocoSet) -> None:
    data = copy.deepcopy(coco_set.data)
    data["annotations"][0]["category_id"] = 99
    path = coco_set.write_ann(data)
    with pytest.raises(ValueError, match="annotation 1 has category_id 99.*do not match"):
        CocoDetection(coco_set.image_dir, path)


def test_annotation_of_unknown_image(coco_set: CocoSet) -> None:
    data = copy.deepcopy(coco_set.data)
    data["annotations"][1]["image_id"] = 42
    path = coco_set.write_ann(data)
    with pytest.raises(ValueError, match="annotation 2 refers to image_id 42"):
        CocoDetection(coco_set.image_dir, path)


def test_image_that_does_not_decode(coco_set: CocoSet) -> None:
    (coco_set.image_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    with pytest.raises(ValueError, match=r"a\.png does not decode.*re-download"):
        _by_id(ds, 1)


def test_missing_image_file(coco_set: CocoSet) -> None:
    (coco_set.image_dir / "c.png").unlink()
    ds = CocoDetection(coco_set.image_dir, coco_set.ann_file)
    with pytest.raises(FileNotFoundError, match=r"c\.png \(image_id 3\).*missing"):
        _by_id(ds, 3)


def test_image_size_differs_from_json(coco_set: CocoSet) -> None:
    data = copy.deepcopy(coco_set.data)
    data["images"][0]["width"] = 41
    ds = CocoDetection(coco_set.image_dir, coco_set.write_ann(data))
    with pytest.raises(ValueError, match=r"a\.png is 40x30 .* says 41x30"):
        _by_id(ds, 1)


# ---------------------------------------------------------------------------- layout


def test_coco_paths_standard_layout(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({}))
    expected = (tmp_path / "val2017", tmp_path / "annotations" / "instances_val2017.json")
    assert coco_paths(tmp_path, "val2017") == expected
    assert coco_paths(tmp_path, "val") == expected


def test_coco_paths_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="COCO root .*absent does not exist"):
        coco_paths(tmp_path / "absent", "train2017")
    with pytest.raises(FileNotFoundError, match="image folder .*train2017 is missing"):
        coco_paths(tmp_path, "train2017")
    (tmp_path / "train2017").mkdir()
    with pytest.raises(FileNotFoundError, match="instances_train2017.json is missing"):
        coco_paths(tmp_path, "train")
