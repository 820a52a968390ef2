"""Time one training iteration of every (detector, loss) pair of Tables 2, 7 and 8, and the
loss's own share of it, beside the paper's ratios to each detector's baseline.

The pairs are the sweeps' own jobs (``sweeps/table2.yaml``, ``table7.yaml``,
``table8.yaml``, seed 0, at the chosen scale), plus RetinaNet with Focal Loss + smooth L1,
the baseline the paper times Table 2's losses against. Every model is built in one
process and timed round-robin on the same batch, so that machine load affects every pair
alike; each row gives the ratio to its detector's baseline (RetinaNet: Focal Loss,
FoveaBox: Focal Loss, Faster R-CNN: cross entropy + L1) beside the paper's (SPEC section 4:
aLRP 0.80 s, 0.53 s with ATSS, AP Loss 0.71 s against Focal's 0.28 s; FoveaBox aLRP 0.54 s
and AP 0.47 s against 0.34 s; Faster R-CNN aLRP 0.85 s against 0.38 s, all on GPUs).

The loss's share is measured, not guessed: after every timed iteration the inputs each
loss module received (logits, deltas, anchors or RoIs, assignments, ground truth; Faster
R-CNN has two, the RPN's and the RoI head's) are replayed through it alone, forward +
backward on detached copies, and that time is reported beside the iteration's.

    python bench/iteration_time.py                          # the cpu scale's models
    python bench/iteration_time.py --tables table8 --iters 5
    python bench/iteration_time.py --preset paper --iters 3 --warmup 1

``cpu`` builds each job as the sweep trains it (built-in data, its batch of 8). ``paper``
builds the sweeps' paper-scale models (ResNet-50, FPN 256, the authors' heads; Faster
R-CNN on P2..P6) with random weights (speed does not depend on them), 80 classes, on two
512-px images of the built-in set.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from alrp_lab.config.compose import compose_config
from alrp_lab.data.collate import collate_detection
from alrp_lab.engine.builders import build_datasets, build_model
from alrp_lab.sweeps.definition import load_sweep
from alrp_lab.sweeps.runner import expand_jobs

TABLES = ("table2", "table7", "table8")
# The paper scale's required keys, set so that the jobs expand; the data and weights are
# replaced below (built-in images, random weights).
PAPER_USER = ["data.root=/unused", "backbone.weights=/unused"]
PAPER_BENCH = [
    "data=shapes",
    "data.image_size=512",
    "data.train_size=512",
    "data.test_size=512",
    "data.num_classes=8",
    "data.num_train=4",
    "data.num_val=1",
    "backbone.weights=null",
    "train.batch_size=2",
]
PAPER_CLASSES = 80
# RetinaNet's baseline, which Table 2 itself does not train (the paper times it); its
# overrides follow Table 2's first job's, whose loss, box error and assigner they replace
# (later overrides win; the first job's lr stays, which does not change the time).
FOCAL_RETINANET = ["loss=focal", "box_error=smooth_l1", "assigner=max_iou"]
FOCAL_RETINANET_ID = "focal-sl1"
# Each detector's baseline job: (table, job id).
BASELINES = {
    "retinanet": ("table2", FOCAL_RETINANET_ID),
    "foveabox": ("table7", "focal-sl1"),
    "faster_rcnn": ("table8", "ce-l1"),
}
# The paper's iteration times as ratios to the same detector's baseline (SPEC section 4).
PAPER_RATIOS = {
    ("table2", "ap-sl1"): 0.71 / 0.28,
    ("table2", "alrp-iou"): 0.80 / 0.28,
    ("table2", "alrp-iou-sb"): 0.80 / 0.28,
    ("table2", "alrp-giou-sb"): 0.80 / 0.28,
    ("table2", "alrp-giou-sb-atss"): 0.53 / 0.28,
    ("table7", "ap-sl1"): 0.47 / 0.34,
    ("table7", "alrp"): 0.54 / 0.34,
    ("table8", "alrp"): 0.85 / 0.38,
}


@dataclass
class Variant:
    """One (detector, loss) pair: where it comes from and its Hydra overrides."""

    table: str
    job_id: str
    label: str
    overrides: list[str]


class LossRecorder:
    """Keeps the last inputs a loss module received, detached, to replay them.

    Recording only detaches (no copy inside the timed iteration; nothing writes to a loss's
    inputs afterwards). The replay copies them as fresh leaves, those that required grad
    (logits, deltas) requiring it again, so its backward stops at the loss, as the real one
    passes through it.
    """

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss
        self.args: tuple[Any, ...] | None = None
        self.paused = False
        loss.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.paused:
            return
        self.args = tuple(_detach(a) for a in args)

    def replay(self) -> float:
        """Seconds of the loss's forward + backward on the recorded inputs (not recorded
        again: the copy would be timed with the loss)."""
        if self.args is None:
            raise RuntimeError("the loss has not run yet")
        args = tuple(_copy(a) for a in self.args)
        self.paused = True
        try:
            start = time.perf_counter()
            self.loss(*args)["loss"].backward()
            return time.perf_counter() - start
        finally:
            self.paused = False


@dataclass
class _GradLeaf:
    """A recorded input that required grad: the replay's copy requires it again."""

    tensor: torch.Tensor


def _detach(value: Any) -> Any:
    """``value`` detached, remembering whether it required grad (for the replay)."""
    if torch.is_tensor(value):
        return _GradLeaf(value.detach()) if value.requires_grad else value.detach()
    if isinstance(value, list | tuple):
        return type(value)(_detach(v) for v in value)
    return value


def _copy(value: Any) -> Any:
    """A fresh copy of a recorded input; one that required grad requires it again."""
    if isinstance(value, _GradLeaf):
        return value.tensor.clone().requires_grad_(True)
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


def _loss_modules(model: nn.Module) -> list[nn.Module]:
    """The loss modules one iteration runs: the dense loss, or the RPN's and RoI head's."""
    if hasattr(model, "roi_head"):
        return [model.rpn.loss, model.roi_head.loss]
    return [model.loss]


def variants(tables: list[str], preset: str) -> list[Variant]:
    """The sweeps' jobs (seed 0) at the preset's scale, RetinaNet's Focal baseline first."""
    user = PAPER_USER if preset == "paper" else []
    out = []
    for table in tables:
        rows = [
            Variant(table, job.id, job.row, [o for o in job.overrides if not o.startswith("seed=")])
            for job in expand_jobs(load_sweep(table), preset, user, seeds=[0])
        ]
        if table == "table2":
            focal = [*rows[0].overrides, *FOCAL_RETINANET]
            rows.insert(0, Variant(table, FOCAL_RETINANET_ID, "Focal Loss + SL1", focal))
        out += rows
    return out


def _timed_step(model, optimizer, images, targets, sizes) -> float:
    start = time.perf_counter()
    losses = model(images, targets, image_sizes=sizes)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for all")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per pair")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = [*(PAPER_BENCH if args.preset == "paper" else []), "logger=none", *args.overrides]

    models: dict[str, tuple[Variant, str, nn.Module, Any, list[LossRecorder], tuple]] = {}
    batches: dict[str, tuple] = {}
    for variant in variants(args.tables, args.preset):
        cfg = compose_config([*variant.overrides, *extra])
        data_key = OmegaConf.to_yaml(cfg.data) + str(cfg.train.batch_size)
        if data_key not in batches:
            train_set, _ = build_datasets(cfg.data)
            loader = DataLoader(
                train_set,
                batch_size=cfg.train.batch_size,
                shuffle=False,
                collate_fn=collate_detection,
            )
            images, targets = next(iter(loader))
            sizes = [tuple(int(v) for v in t["size"]) for t in targets]
            batches[data_key] = (images, targets, sizes, train_set.num_classes)
        batch = batches[data_key]
        num_classes = PAPER_CLASSES if args.preset == "paper" else batch[3]
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=num_classes)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        recorders = [LossRecorder(loss) for loss in _loss_modules(model)]
        key = f"{variant.table}/{variant.job_id}"
        models[key] = (variant, cfg.detector.name, model, optimizer, recorders, batch)

    times: dict[str, list[float]] = {key: [] for key in models}
    loss_times: dict[str, list[float]] = {key: [] for key in models}
    for i in range(args.warmup + args.iters):
        for key, (_, _, model, optimizer, recorders, batch) in models.items():
            images, targets, sizes, _ = batch
            seconds = _timed_step(model, optimizer, images, targets, sizes)
            loss_seconds = sum(recorder.replay() for recorder in recorders)
            if i >= args.warmup:
                times[key].append(seconds)
                loss_times[key].append(loss_seconds)

    medians = {key: statistics.median(v) for key, v in times.items()}
    baseline = {
        detector: medians[f"{table}/{job_id}"]
        for detector, (table, job_id) in BASELINES.items()
        if f"{table}/{job_id}" in medians
    }
    images = next(iter(batches.values()))[0]
    table = Table(
        title=f"{args.preset}: one training iteration of Tables {', '.join(args.tables)}, "
        f"batch {images.shape[0]} at {tuple(images.shape[-2:])}, median of {args.iters} "
        f"(CPU threads: {torch.get_num_threads()})"
    )
    columns = ("table", "detector", "loss", "iteration (s)", "ratio to baseline", "paper ratio")
    for column in (*columns, "loss fwd+bwd (s)", "loss share"):
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for key, (variant, detector, *_rest) in models.items():
        median = medians[key]
        loss_median = statistics.median(loss_times[key])
        base = baseline.get(detector)
        paper = PAPER_RATIOS.get((variant.table, variant.job_id))
        is_base = BASELINES[detector] == (variant.table, variant.job_id)
        table.add_row(
            variant.table,
            detector,
            variant.label,
            f"{median:.4f}",
            f"{median / base:.2f}x" if base else "-",
            "1.00x" if is_base else (f"{paper:.1f}x" if paper else "-"),
            f"{loss_median:.4f}",
            f"{100 * loss_median / median:.0f}%",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
