"""Time one training iteration of the same RetinaNet under aLRP, AP and Focal Loss.

All detectors are built from the project's configs (same backbone, head, anchors and a
batch of the built-in data), timed in one process, round-robin so that machine load
affects every loss alike, and reported with the ratio to Focal Loss (the paper quotes
0.80 s / 0.28 s = 2.9x for aLRP with max-IoU and 0.53 s / 0.28 s = 1.9x with ATSS).

    python bench/iteration_time.py                        # the default CPU experiment
    python bench/iteration_time.py --overrides data.train_size=256 --iters 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from alrp_lab.config import validate_config
from alrp_lab.data.collate import collate_detection
from alrp_lab.engine.builders import build_datasets, build_model

CONF = str(Path(__file__).resolve().parents[1] / "conf")

VARIANTS = {
    "Focal Loss + GIoU": ["loss=focal", "box_error=giou"],
    "AP Loss + GIoU": ["loss=ap", "box_error=giou"],
    "aLRP Loss (GIoU, SB)": ["loss=alrp", "box_error=giou"],
}


def _timed_step(model, optimizer, images, targets, sizes) -> float:
    start = time.perf_counter()
    losses = model(images, targets, image_sizes=sizes)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per loss")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {}
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for name, overrides in VARIANTS.items():
            cfg = validate_config(
                compose("config", overrides=[*overrides, "logger=none", *args.overrides])
            )
            if not models:
                train_set, _ = build_datasets(cfg.data)
                loader = DataLoader(
                    train_set,
                    batch_size=cfg.train.batch_size,
                    shuffle=False,
                    collate_fn=collate_detection,
                )
                images, targets = next(iter(loader))
                sizes = [tuple(int(v) for v in t["size"]) for t in targets]
            torch.manual_seed(0)
            model = build_model(cfg, num_classes=train_set.num_classes)
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            models[name] = (model, optimizer)

    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.iters):
        for name, (model, optimizer) in models.items():
            seconds = _timed_step(model, optimizer, images, targets, sizes)
            if i >= args.warmup:
                times[name].append(seconds)

    focal = statistics.median(times["Focal Loss + GIoU"])
    table = Table(
        title=f"one training iteration, batch {len(targets)} at {tuple(images.shape[-2:])}, "
        f"median of {args.iters} (CPU threads: {torch.get_num_threads()})"
    )
    for column in ("loss", "median (s)", "min (s)", "ratio to Focal"):
        table.add_column(column, justify="right" if column != "loss" else "left")
    for name, values in times.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.4f}", f"{min(values):.4f}", f"{median / focal:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
