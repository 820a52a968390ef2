"""Time one training iteration of the same detector in the default (NCHW) and the
channels-last (NHWC) memory layout, ``train.channels_last``.

Both models start from the same weights and train on the same batch of the built-in data,
timed in one process and alternating (one step of each per round), so that machine load
affects both alike; the table gives the medians and their ratio. The first step's losses
of the two are printed too: the layouts compute the same thing and round differently, so
they agree to float32's precision, not bitwise.

    python bench/memory_format.py                      # the sweeps' cpu scale, aLRP + GIoU
    python bench/memory_format.py --overrides assigner=atss --iters 30
    python bench/memory_format.py --threads 1          # as a sweep job runs
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

# The regime study's and the paper tables' cpu jobs: RetinaNet, max-IoU, aLRP GIoU + SB.
BASE = ["scale=cpu", "assigner=max_iou", "loss=alrp", "box_error=giou", "logger=none"]
LAYOUTS = {
    "contiguous (NCHW)": torch.contiguous_format,
    "channels-last (NHWC)": torch.channels_last,
}


def _step(model, optimizer, images, targets, sizes) -> tuple[float, float]:
    """Seconds of one forward, backward and SGD step, and the step's loss."""
    start = time.perf_counter()
    losses = model(images, targets, image_sizes=sizes)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start, float(losses["loss"].detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per layout")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = validate_config(compose("config", overrides=[*BASE, *args.overrides]))
    train_set, _ = build_datasets(cfg.data)
    loader = DataLoader(
        train_set, batch_size=cfg.train.batch_size, shuffle=False, collate_fn=collate_detection
    )
    images, targets = next(iter(loader))
    sizes = [tuple(int(v) for v in t["size"]) for t in targets]

    runs = {}
    for name, layout in LAYOUTS.items():
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=train_set.num_classes).to(memory_format=layout)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        runs[name] = (model, optimizer, images.contiguous(memory_format=layout))

    times: dict[str, list[float]] = {name: [] for name in runs}
    first_loss: dict[str, float] = {}
    for i in range(args.warmup + args.iters):
        for name, (model, optimizer, batch) in runs.items():
            seconds, loss = _step(model, optimizer, batch, targets, sizes)
            first_loss.setdefault(name, loss)
            if i >= args.warmup:
                times[name].append(seconds)

    base_name, last_name = LAYOUTS
    base = statistics.median(times[base_name])
    table = Table(
        title=f"one training iteration, batch {len(targets)} at {tuple(images.shape[-2:])}, "
        f"median of {args.iters} (CPU threads: {torch.get_num_threads()})"
    )
    for column in ("layout", "iteration (s)", "speed-up", "first step's loss"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for name in runs:
        median = statistics.median(times[name])
        table.add_row(name, f"{median:.4f}", f"{base / median:.2f}x", f"{first_loss[name]:.6f}")
    Console(width=120).print(table)
    gap = abs(first_loss[last_name] - first_loss[base_name]) / abs(first_loss[base_name])
    print(f"first step's losses differ by {gap:.1e} (relative)")


if __name__ == "__main__":
    main()
