"""A COCO-format detection data set read through pycocotools.

Serves real COCO and the built-in shapes set alike. Targets use the package's conventions:
boxes ``(x1, y1, x2, y2)`` float pixels of the (transformed) image, labels contiguous
``0..C-1`` with :attr:`CocoDetection.label_to_category_id` mapping them back to COCO ids
(sorted by id) for evaluation.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from alrp_lab.data.transforms import Normalize, ToTensor
from alrp_lab.errors import DataError, DataNotFoundError

__all__ = ["CocoDetection", "coco_paths", "load_coco_annotations"]

Target = dict[str, Any]
Transform = Callable[[Image.Image, Target], tuple[Tensor, Target]]

_REQUIRED_KEYS = ("images", "annotations", "categories")
_SPLIT_ALIASES = {"train": "train2017", "val": "val2017", "test": "test2017"}


def coco_paths(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """Image folder and annotation file of a split in the standard COCO layout.

    ``root/<split>/`` and ``root/annotations/instances_<split>.json``, where ``split`` is a
    folder name such as ``"train2017"`` or ``"val2017"`` (``"train"``/``"val"`` are read as
    the 2017 splits). Raises FileNotFoundError naming what is missing.
    """
    split = _SPLIT_ALIASES.get(split, split)
    root = Path(root).expanduser()
    layout = (
        f"expected {root}/{split}/ (images) and "
        f"{root}/annotations/instances_{split}.json; set data.root to the COCO folder"
    )
    if not root.is_dir():
        raise DataNotFoundError(f"COCO root {root} does not exist: {layout}")
    image_dir = root / split
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not image_dir.is_dir():
        raise DataNotFoundError(f"COCO image folder {image_dir} is missing: {layout}")
    if not ann_file.is_file():
        raise DataNotFoundError(f"COCO annotation file {ann_file} is missing: {layout}")
    return image_dir, ann_file


def load_coco_annotations(ann_file: str | os.PathLike[str]) -> COCO:
    """Read and check a COCO annotation file; return an indexed pycocotools ``COCO``.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not
    COCO detection JSON or whose annotations name unknown categories or images.
    """
    ann_file = Path(ann_file).expanduser()
    if not ann_file.is_file():
        raise DataNotFoundError(
            f"annotation file {ann_file} not found; check the path (COCO keeps them in "
            "<root>/annotations/instances_<split>.json)"
        )
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(
            f"annotation file {ann_file} is not readable JSON ({err}); re-download or regenerate it"
        ) from None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"annotation file {ann_file} is not COCO detection format: it needs the keys "
            f"{list(_REQUIRED_KEYS)}, found {found}; use an instances_*.json file"
        )
    _check_references(data, ann_file)
    coco = COCO()
    coco.dataset = data
    # pycocotools announces its indexing on stdout; keep the console for our own logs.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_references(data: dict[str, Any], ann_file: Path) -> None:
    """Every annotation must name a known category and image and carry an xywh bbox."""
    try:
        category_ids = {c["id"] for c in data["categories"]}
        image_ids = {img["id"] for img in data["images"]}
    except (KeyError, TypeError):
        raise DataError(
            f"annotation file {ann_file}: every category and image needs an 'id'"
        ) from None
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or any(
            k not in ann for k in ("id", "image_id", "category_id", "bbox")
        ):
            raise DataError(
                f"annotation file {ann_file}: an annotation lacks id/image_id/category_id/bbox: "
                f"{ann!r:.200}"
            )
        if ann["category_id"] not in category_ids:
            raise DataError(
                f"annotation file {ann_file}: annotation {ann['id']} has category_id "
                f"{ann['category_id']}, which is not among the categories "
                f"{sorted(category_ids)}; the annotation and category lists do not match"
            )
        if ann["image_id"] not in image_ids:
            raise DataError(
                f"annotation file {ann_file}: annotation {ann['id']} refers to image_id "
                f"{ann['image_id']}, which is not in 'images'"
            )
        if len(ann["bbox"]) != 4:
            raise DataError(
                f"annotation file {ann_file}: annotation {ann['id']} has bbox {ann['bbox']}; "
                "COCO boxes are [x, y, width, height]"
            )


def _json_size(info: dict[str, Any]) -> tuple[float, float]:
    """(height, width) an image entry declares; unbounded where it declares none."""
    return float(info.get("height", np.inf)), float(info.get("width", np.inf))


class CocoDetection(Dataset):
    """COCO detection data: ``dataset[i] -> (image, target)``.

    Args:
        image_dir: folder holding the images named by ``file_name`` in the annotations.
        ann_file: COCO ``instances_*.json``.
        transforms: callable ``(PIL RGB image, target) -> (image (3, H, W) float32, target)``
            that keeps ``target["boxes"]`` (numpy float32 (G, 4) xyxy on input) in step with
            the image; see :func:`alrp_lab.data.transforms.build_transforms`. ``None``
            converts to a tensor and normalises with the ImageNet statistics, at the
            original size.
        skip_crowd: drop ``iscrowd=1`` regions from the targets (COCO training does;
            evaluation reads crowd regions from the annotation file, not from here).
        skip_empty: leave out images with no (kept) box, as detector training usually does.

    A target holds ``boxes`` (G, 4) float32 xyxy in transformed pixels, ``labels`` (G,)
    long in ``0..C-1``, ``image_id`` int, ``orig_size`` (h, w) and ``size`` (h, w) ints
    (after the transforms). Boxes are clipped to the image; boxes under 1 pixel wide or
    high are dropped.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        transforms: Transform | None = None,
        *,
        skip_crowd: bool = True,
        skip_empty: bool = False,
    ) -> None:
        self.image_dir = Path(image_dir).expanduser()
        if not self.image_dir.is_dir():
            raise DataNotFoundError(
                f"image folder {self.image_dir} not found; check data.root (COCO keeps "
                "images in <root>/train2017 and <root>/val2017)"
            )
        self.ann_file = Path(ann_file).expanduser()
        self.coco = load_coco_annotations(self.ann_file)
        self.transforms = transforms
        self.skip_crowd = skip_crowd
        self.label_to_category_id: list[int] = sorted(self.coco.getCatIds())
        self.category_id_to_label: dict[int, int] = {
            cid: label for label, cid in enumerate(self.label_to_category_id)
        }
        self.ids: list[int] = sorted(self.coco.getImgIds())
        if skip_empty:
            imgs = self.coco.imgs
            self.ids = [
                i for i in self.ids if len(self._annotations(i, *_json_size(imgs[i]))[0]) > 0
            ]

    @property
    def num_classes(self) -> int:
        """Number of categories C; labels are ``0..C-1``."""
        return len(self.label_to_category_id)

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept boxes of one image: ((G, 4) float32 xyxy clipped to (h, w), (G,) int64)."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.skip_crowd and ann.get("iscrowd", 0):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            boxes.append((x, y, x + bw, y + bh))
            labels.append(self.category_id_to_label[ann["category_id"]])
        xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, h)
        keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)
        return xyxy[keep], np.asarray(labels, dtype=np.int64)[keep]

    def check_images(self) -> None:
        """Open every image's header (cheap: no pixels are decoded) and compare its size with
        the annotation file's, so a missing, corrupt or mismatched file stops a run before
        training rather than at evaluation. Raises :class:`ValueError` (or
        :class:`FileNotFoundError`) naming the first bad file and how many are bad."""
        bad: list[str] = []
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            path = self.image_dir / info["file_name"]
            try:
                with Image.open(path) as img:
                    size = img.size
            except FileNotFoundError:
                bad.append(f"{path} is missing")
                continue
            except (UnidentifiedImageError, OSError, ValueError) as err:
                bad.append(f"{path} does not decode ({err})")
                continue
            expected = (info.get("width"), info.get("height"))
            if None not in expected and size != expected:
                bad.append(
                    f"{path} is {size[0]}x{size[1]}, the annotations say "
                    f"{expected[0]}x{expected[1]}"
                )
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DataError(
                f"{len(bad)} of {len(self.ids)} images listed in {self.ann_file} cannot be used: "
                f"{bad[0]}{more}; fix or replace those files, or remove them from the "
                "annotation file"
            )

    def count_invalid_boxes(self) -> int:
        """Annotations of the kept images whose box has zero, negative or non-finite width
        or height: they are dropped from the targets (as COCO's tools do)."""
        count = 0
        for image_id in self.ids:
            for ann in self.coco.imgToAnns.get(image_id, []):
                _, _, bw, bh = (float(v) for v in ann["bbox"])
                if not (math.isfinite(bw) and math.isfinite(bh) and bw > 0 and bh > 0):
                    count += 1
        return count

    def _load_image(self, info: dict[str, Any]) -> Image.Image:
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise DataNotFoundError(
                f"image {path} (image_id {info['id']}) listed in {self.ann_file} is missing; "
                "check that the image folder matches the annotation file"
            )
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(
                f"image {path} does not decode ({err}); the file is corrupt: re-download it"
            ) from None
        expected = (info.get("width"), info.get("height"))
        if None not in expected and img.size != expected:
            raise DataError(
                f"image {path} is {img.size[0]}x{img.size[1]} (w x h) but {self.ann_file} "
                f"says {expected[0]}x{expected[1]}; the image and annotation file do not match"
            )
        return img

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._load_image(info)
        w, h = image.size
        boxes, labels = self._annotations(image_id, h, w)
        target: Target = {
            "boxes": boxes,
            "labels": labels,
            "image_id": int(image_id),
            "orig_size": (h, w),
            "size": (h, w),
        }
        if self.transforms is None:
            out, target = ToTensor()(*Normalize()(np.asarray(image, dtype=np.float32), target))
        else:
            out, target = self.transforms(image, target)
        if not isinstance(target["boxes"], Tensor):
            target["boxes"] = torch.as_tensor(target["boxes"], dtype=torch.float32)
            target["labels"] = torch.as_tensor(target["labels"], dtype=torch.int64)
        target["size"] = (int(out.shape[-2]), int(out.shape[-1]))
        return out, target
