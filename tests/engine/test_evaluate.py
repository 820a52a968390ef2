"""Sharded evaluation: 2 gloo processes each predict a shard, rank 0 merges, and the result
is the single process's detections and metrics."""

from __future__ import annotations

import json
import os

import torch
import torch.multiprocessing as mp

from alrp_lab.data.coco import CocoDetection
from alrp_lab.data.shapes import build_shapes_dataset
from alrp_lab.data.transforms import build_transforms
from alrp_lab.engine.evaluate import evaluate_model, shard_indices
from tests.gloo import free_port

WORLD = 2


def _val_set(root: str) -> CocoDetection:
    splits = build_shapes_dataset(root, seed=3, num_train=2, num_val=5, image_size=64)
    return CocoDetection(
        splits.val_images,
        splits.val_ann,
        transforms=build_transforms(train=False, size=64, augment="none"),
    )


def _model():
    from alrp_lab.models import build_retinanet
    from tests.models.helpers import TINY_DENSE, config_sections

    torch.manual_seed(0)
    # An untrained head scores everything near its prior: score_thr 0 so that every image
    # has detections to merge.
    sections = config_sections("retinanet", **TINY_DENSE, score_thr=0.0)
    return build_retinanet(6, **sections)


def _worker(rank: int, port: int, root: str, out_dir: str) -> None:
    import torch.distributed as dist

    from alrp_lab.engine.distributed import init_distributed

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    ctx = init_distributed(device="cpu")
    try:
        metrics, detections = evaluate_model(
            _model(), _val_set(root), device=torch.device("cpu"), batch_size=2, ctx=ctx
        )
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"metrics": metrics, "detections": detections}, f)
    finally:
        dist.destroy_process_group()


def test_shards_cover_every_image_once():
    shards = [shard_indices(7, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]


def test_sharded_evaluation_equals_one_process(tmp_path):
    root = str(tmp_path / "shapes")
    torch.set_num_threads(1)
    metrics, detections = evaluate_model(
        _model(), _val_set(root), device=torch.device("cpu"), batch_size=2
    )
    assert len({d["image_id"] for d in detections}) == 5
    mp.spawn(_worker, args=(free_port(), root, str(tmp_path)), nprocs=WORLD)
    out = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # Rank 0 holds the merged detections, in the single process's order, and its metrics.
    assert out[0]["detections"] == detections
    assert out[0]["metrics"] == json.loads(json.dumps(metrics))
    assert out[1] == {"metrics": {}, "detections": []}
