"""The negatives shortcut of the ranking losses, measured in one run against Focal Loss.

    python bench/ranking_shortcut.py [--sizes 2e6:500] [--threads 2] [--repeats 3]

For each size, two score distributions of float32 logits: "start" (every score near the
prior, as at the first iteration: the shortcut drops little) and "trained" (negatives about
six logits below the positives, as after the first epochs: it drops most). Rows: aLRP Loss
with the shortcut (the library's path), aLRP Loss without it (every negative through the
sorted path), and Focal Loss, each forward + backward, best of ``--repeats``; the ratios are
to Focal Loss in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from loss_speed import scored_batch  # bench/ is the script's folder
from rich.console import Console
from rich.table import Table

import alrp_lab.losses.alrp as alrp_module
from alrp_lab.losses import alrp_loss, sigmoid_focal_loss


def _batch(num: int, num_pos: int, kind: str):
    # The same batches as bench/loss_speed.py's table against Focal Loss.
    return scored_batch(num, num_pos, kind, "cpu")


def _best(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2e6:500")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = Table(title=f"forward + backward, CPU, {torch.get_num_threads()} thread(s)")
    for col in ("N", "P", "scores", "loss", "ms", "x Focal"):
        table.add_column(col, justify="right")
    split = alrp_module.split_ranking_inputs
    for item in args.sizes.split(","):
        n, p = (int(float(v)) for v in item.split(":"))
        for kind in ("start", "trained"):
            logits, labels, errors = _batch(n, p, kind)

            def alrp(logits=logits, labels=labels, errors=errors) -> None:
                x = logits.clone().requires_grad_()
                alrp_loss(x, labels, errors)[0].backward()

            def focal(logits=logits, labels=labels) -> None:
                x = logits.clone().requires_grad_()
                sigmoid_focal_loss(x, labels).backward()

            with_shortcut = _best(alrp, args.repeats)
            alrp_module.split_ranking_inputs = lambda lo, la, delta=None: split(lo, la)
            try:
                without = _best(alrp, args.repeats)
            finally:
                alrp_module.split_ranking_inputs = split
            reference = _best(focal, args.repeats)
            for name, seconds in (
                ("aLRP (shortcut)", with_shortcut),
                ("aLRP (all negatives)", without),
                ("Focal Loss", reference),
            ):
                table.add_row(
                    f"{n:.0e}",
                    str(p),
                    kind,
                    name,
                    f"{seconds * 1e3:.0f}",
                    f"{seconds / reference:.2f}",
                )
    Console().print(table)


if __name__ == "__main__":
    main()
