"""What a checkpoint's model computes on training batches: every loss term it returns (for
Faster R-CNN each stage's), its localisation weights (SB or constant) and, for Faster
R-CNN, how many ground truths a training proposal covers at IoU 0.5.

A diagnostic of a run in progress or stopped, not a benchmark: the training log holds the
sums of both stages only.

    python tools/stage_losses.py RUN_DIR [--batches 4]

RUN_DIR is a run folder (its ``config.yaml`` and ``checkpoints/last.pt``). Keys added to
the config since the run was recorded take their null (unset) value.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from alrp_lab.config import validate_config
from alrp_lab.data.collate import collate_detection
from alrp_lab.engine.builders import build_datasets, build_model
from alrp_lab.ops.boxes import box_iou

# Detector keys added after runs were recorded, at the value that computes what they did.
ADDED_DETECTOR_KEYS = {"faster_rcnn": {"add_gt_as_proposals": None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    raw = OmegaConf.load(args.run_dir / "config.yaml")
    for key, value in ADDED_DETECTOR_KEYS.get(raw.detector.name, {}).items():
        raw.detector.setdefault(key, value)
    cfg = validate_config(raw)
    train_set, _ = build_datasets(cfg.data)
    model = build_model(cfg, num_classes=train_set.num_classes)
    checkpoint = torch.load(args.run_dir / "checkpoints" / "last.pt", weights_only=False)
    model.load_state_dict(checkpoint["model"])
    print(f"iteration {checkpoint.get('iteration')}, epoch {checkpoint.get('epoch')}")
    weights = ", ".join(f"{float(w.value):.1f}" for w in model.loc_weights())
    print(f"localisation weights (RoI stage, then RPN, for Faster R-CNN): {weights}")

    loader = DataLoader(
        train_set, batch_size=cfg.train.batch_size, shuffle=False, collate_fn=collate_detection
    )
    model.train()
    covered = total = 0
    for index, (images, targets) in enumerate(loader):
        if index == args.batches:
            break
        sizes = [tuple(int(v) for v in t["size"]) for t in targets]
        with torch.no_grad():
            losses = model(images, targets, image_sizes=sizes)
            print({k: round(float(v), 4) for k, v in losses.items() if k != "loss"})
            if not hasattr(model, "rpn"):
                continue
            proposals, _ = model.rpn(model.fpn(model.backbone(images)), sizes)
        for boxes, target in zip(proposals, targets, strict=True):
            if len(target["boxes"]) and len(boxes):
                best = box_iou(target["boxes"], boxes).max(dim=1).values
                covered += int((best >= 0.5).sum())
            total += len(target["boxes"])
    if total:
        print(f"ground truths with a training proposal at IoU >= 0.5: {covered} / {total}")


if __name__ == "__main__":
    main()
