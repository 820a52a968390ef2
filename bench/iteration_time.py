"""Time one training iteration of the same RetinaNet under aLRP, AP and Focal Loss, and the
loss's own share of it.

All detectors are built from the project's configs (same backbone, head, anchors and a
batch of the built-in data), timed in one process, round-robin so that machine load
affects every loss alike, and reported with the ratio to Focal Loss (the paper quotes
0.80 s / 0.28 s = 2.9x for aLRP with max-IoU and 0.53 s / 0.28 s = 1.9x with ATSS).

The loss's share is measured, not guessed: after every timed iteration the inputs the loss
module received (logits, deltas, anchors, assignments, ground truth) are replayed through
the loss alone, forward + backward on detached copies, and that time is reported beside
the iteration's (the copy itself, one clone of the logits, is inside the iteration's time).

    python bench/iteration_time.py                        # the default CPU experiment
    python bench/iteration_time.py --preset paper --iters 3 --warmup 1
    python bench/iteration_time.py --overrides data.train_size=256 --iters 10

Presets: ``cpu`` is the default experiment; ``paper`` is the paper's detector (ResNet-50,
FPN and head of 256 channels with 4 head convolutions, 512 px, 80 classes, batch 2; with the
default ATSS 2 anchors a location, 10.9k an image; with ``--overrides assigner=max_iou`` 6,
about 33k) on images of the built-in data set, with
random weights (speed does not depend on them; the 80-way head is built even though the
images carry fewer classes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table
from torch import nn
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

# (overrides, number of classes the head predicts or None for the data set's own)
PRESETS: dict[str, tuple[list[str], int | None]] = {
    "cpu": ([], None),
    "paper": (
        [
            "backbone=resnet50",
            "detector.fpn_channels=256",
            "detector.head_convs=4",
            "detector.head_channels=256",
            "detector.octave_base_scale=4",
            "detector.scales_per_octave=2",
            "data.image_size=512",
            "data.train_size=512",
            "data.test_size=512",
            "data.num_classes=8",
            "data.num_train=4",
            "data.num_val=1",
            "train.batch_size=2",
        ],
        80,
    ),
}


class LossRecorder:
    """Keeps detached copies of the last inputs a loss module received, to replay them.

    Logits (B, A, C) and deltas (B, A, 4) are copied as fresh leaves that require grad, so
    the replay's backward stops at the loss, as the real one passes through it.
    """

    def __init__(self, loss: nn.Module) -> None:
        self.args: tuple[Any, ...] | None = None
        self.paused = False
        loss.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.paused:
            return
        self.args = tuple(
            a.detach().clone().requires_grad_(a.requires_grad) if torch.is_tensor(a) else a
            for a in args
        )

    def replay(self, loss: nn.Module) -> float:
        """Seconds of the loss's forward + backward on the recorded inputs (not recorded
        again: the copy would be timed with the loss)."""
        if self.args is None:
            raise RuntimeError("the loss has not run yet")
        args = tuple(
            a.detach().requires_grad_(a.requires_grad) if torch.is_tensor(a) else a
            for a in self.args
        )
        self.paused = True
        try:
            start = time.perf_counter()
            loss(*args)["loss"].backward()
            return time.perf_counter() - start
        finally:
            self.paused = False


def _timed_step(model, optimizer, images, targets, sizes) -> float:
    start = time.perf_counter()
    losses = model(images, targets, image_sizes=sizes)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per loss")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset_overrides, num_classes = PRESETS[args.preset]

    models = {}
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for name, overrides in VARIANTS.items():
            cfg = validate_config(
                compose(
                    "config",
                    overrides=[*preset_overrides, *overrides, "logger=none", *args.overrides],
                )
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
            model = build_model(cfg, num_classes=num_classes or train_set.num_classes)
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            models[name] = (model, optimizer, LossRecorder(model.loss))

    times: dict[str, list[float]] = {name: [] for name in models}
    loss_times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.iters):
        for name, (model, optimizer, recorder) in models.items():
            seconds = _timed_step(model, optimizer, images, targets, sizes)
            loss_seconds = recorder.replay(model.loss)
            if i >= args.warmup:
                times[name].append(seconds)
                loss_times[name].append(loss_seconds)

    focal = statistics.median(times["Focal Loss + GIoU"])
    focal_loss = statistics.median(loss_times["Focal Loss + GIoU"])
    # Every variant shares the detector: read its size from the Focal Loss one's last inputs.
    model, _, focal_recorder = models["Focal Loss + GIoU"]
    num_anchors = focal_recorder.args[0].shape[1]  # logits (B, A, C)
    table = Table(
        title=f"{args.preset}: one training iteration, batch {len(targets)} at "
        f"{tuple(images.shape[-2:])}, {num_anchors} anchors x {model.num_classes} classes an "
        f"image, median of {args.iters} (CPU threads: {torch.get_num_threads()})"
    )
    columns = ("loss", "iteration (s)", "ratio to Focal", "loss fwd+bwd (s)", "loss share")
    for column in (*columns, "loss ratio to Focal"):
        table.add_column(column, justify="right" if column != "loss" else "left")
    for name in models:
        median = statistics.median(times[name])
        loss_median = statistics.median(loss_times[name])
        table.add_row(
            name,
            f"{median:.4f}",
            f"{median / focal:.2f}x",
            f"{loss_median:.4f}",
            f"{100 * loss_median / median:.0f}%",
            f"{loss_median / focal_loss:.2f}x",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
