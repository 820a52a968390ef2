"""Run a detector over a data set and score its detections with :mod:`alrp_lab.eval`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from alrp_lab.data.collate import collate_detection
from alrp_lab.eval import evaluate_detections
from alrp_lab.ops.boxes import box_xyxy_to_xywh


def detections_to_coco(
    outputs: Iterable[dict[str, torch.Tensor]],
    targets: Iterable[dict[str, Any]],
    label_to_category_id: list[int],
) -> list[dict[str, Any]]:
    """Convert model outputs to COCO result dicts in original-image pixels.

    Each output holds ``boxes (K, 4)`` in the network input's pixels, ``scores (K,)`` and
    contiguous ``labels (K,)``; each target its ``image_id``, ``orig_size`` and ``size``
    (h, w). Test-time transforms only resize, so one scale per axis maps boxes back.
    """
    results: list[dict[str, Any]] = []
    for out, target in zip(outputs, targets, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        orig_h, orig_w = (float(v) for v in target["orig_size"])
        size_h, size_w = (float(v) for v in target["size"])
        scale = torch.tensor([orig_w / size_w, orig_h / size_h] * 2)
        boxes = box_xyxy_to_xywh(boxes * scale)
        scores = out["scores"].detach().float().cpu().tolist()
        labels = out["labels"].detach().cpu().tolist()
        image_id = int(target["image_id"])
        for box, score, label in zip(boxes.tolist(), scores, labels, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label_to_category_id[label]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """The data set indices process ``rank`` of ``world_size`` evaluates: every
    ``world_size``-th image from ``rank``, so the shards differ by at most one image."""
    return list(range(rank, length, world_size))


@torch.no_grad()
def _predict_per_image(
    model: nn.Module,
    dataset,
    indices: list[int],
    *,
    device: torch.device,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
) -> list[tuple[int, list[dict[str, Any]]]]:
    """(data set index, that image's COCO result dicts) for each of ``indices``."""
    loader = DataLoader(
        Subset(dataset, indices), batch_size=batch_size, shuffle=False, collate_fn=collate_detection
    )
    was_training = model.training
    model.eval()
    out: list[tuple[int, list[dict[str, Any]]]] = []
    position = 0
    try:
        for images, targets in loader:
            sizes = [tuple(int(v) for v in t["size"]) for t in targets]
            outputs = model(images.to(device), image_sizes=sizes)
            for output, target in zip(outputs, targets, strict=True):
                dets = detections_to_coco([output], [target], dataset.label_to_category_id)
                out.append((indices[position], dets))
                position += 1
            if on_batch is not None:
                on_batch(len(targets))
    finally:
        model.train(was_training)
    return out


def predict(
    model: nn.Module,
    dataset,
    *,
    device: torch.device,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
    ctx: Any = None,
) -> list[dict[str, Any]] | None:
    """Detections of ``model`` on every image of ``dataset`` as COCO result dicts, in the
    data set's image order.

    With a distributed context ``ctx`` (``engine.distributed.DistributedContext``) of several
    processes, each predicts its shard (:func:`shard_indices`) and rank 0 merges them into
    the same list one process makes; the other ranks get None. ``on_batch`` counts this
    process's images.
    """
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    mine = _predict_per_image(
        model,
        dataset,
        shard_indices(len(dataset), rank, world),
        device=device,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    shards = ctx.gather_objects(mine) if ctx is not None else [mine]
    if shards is None:
        return None
    merged = sorted((pair for shard in shards for pair in shard), key=lambda pair: pair[0])
    return [det for _, dets in merged for det in dets]


def evaluate_model(
    model: nn.Module,
    dataset,
    *,
    device: torch.device,
    batch_size: int = 8,
    bounds: bool = False,
    on_batch: Callable[[int], None] | None = None,
    ctx: Any = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Predict on ``dataset`` (sharded across the processes of ``ctx``, if any) and score
    against its COCO ground truth on rank 0.

    Returns ``(metrics, detections)``; metrics are the keys of
    :func:`alrp_lab.eval.evaluate_detections` (with Table 5's bounds when ``bounds``). Ranks
    other than 0 get ``({}, [])``.
    """
    detections = predict(
        model, dataset, device=device, batch_size=batch_size, on_batch=on_batch, ctx=ctx
    )
    if detections is None:
        return {}, []
    metrics = evaluate_detections(dataset.coco, detections, bounds=bounds)
    return metrics, detections
