"""aLRP Loss against the Algorithm A.2 loop and against the losses users would use instead:
time and peak memory, measured in one run.

    python bench/loss_speed.py                      # the default sizes, CPU (and CUDA if present)
    python bench/loss_speed.py --quick              # tiny sizes, a smoke test
    python bench/loss_speed.py --sizes 1e6:500,2e6:2000 --device cpu --repeats 5
    python bench/loss_speed.py --focal-sizes 2e6:500,2.1e7:1500 --sizes none

The second table puts aLRP Loss, AP Loss and Focal Loss (forward + backward of each, timed
round-robin so that machine load falls on all alike) on the same flattened logits at the
``--focal-sizes``, for two score distributions: "start" (every score near the 0.01 prior, as
at the first iteration) and "trained" (negatives about six logits below the positives, as
after the first epochs, where the ranking losses drop most negatives before sorting), with
each loss's ratio to Focal Loss: the project's, and the faster of it and torchvision's
formula (fewer passes, no overflow guard, no ignored labels). 2.1e7 examples is one GPU's
share at the paper's setting (8 images of 512 px, about 33k anchors each, 80 classes).

Both paths get the same float32 batch (N negatives, P positives, shuffled) in the same process
and compute the loss and its gradients (forward + backward for the sorted path; the loop
returns both at once). The loop is skipped where it would take over a minute (``--loop-budget``
seconds): its time is then estimated from a run over a few positives, scaled to P. Peak
memory of the sorted path is measured in a fresh subprocess per size: on CPU the rise of
ru_maxrss over the level after the inputs are built, on CUDA
``torch.cuda.max_memory_allocated`` over the inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor

from alrp_lab.losses import alrp_loss, ap_loss, sigmoid_focal_loss
from alrp_lab.testing.reference import RankingBatch, alrp_loss_reference, make_ranking_batch

DEFAULT_SIZES = "1e5:100,1e6:500,2e6:2000,1e7:3000"
DEFAULT_FOCAL_SIZES = "2e6:500,2.1e7:1500"
QUICK_FOCAL_SIZES = "5e4:50"
QUICK_SIZES = "1e4:20,5e4:50"
LOOP_BUDGET_S = 60.0
ESTIMATE_POSITIVES = 8


@dataclass
class Row:
    device: str
    num_neg: int
    num_pos: int
    sorted_s: float
    loop_s: float
    loop_estimated: bool
    peak_bytes: int
    peak_exact: bool


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1e5:100,1e6:500"`` -> [(100000, 100), (1000000, 500)] as (N, P)."""
    sizes = []
    for item in text.split(","):
        try:
            n, p = item.split(":")
            sizes.append((int(float(n)), int(float(p))))
        except ValueError:
            raise SystemExit(f"bad --sizes item {item!r}: write N:P pairs, e.g. 1e6:500") from None
    return sizes


def _batch(num_neg: int, num_pos: int, device: str) -> RankingBatch:
    return make_ranking_batch(num_neg, num_pos, seed=0, dtype=torch.float32, device=device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_sorted(batch: RankingBatch) -> None:
    """One forward + backward of the sorted aLRP Loss."""
    logits = batch.logits.detach().requires_grad_()
    loc_errors = batch.loc_errors.detach().requires_grad_()
    out = alrp_loss(logits, batch.labels, loc_errors)
    (out.cls + out.loc).backward()


def run_loop(batch: RankingBatch) -> None:
    """Loss and gradients by the Algorithm A.2 loop."""
    alrp_loss_reference(batch.logits, batch.labels, batch.loc_errors)


def best_time(fn: Callable[[], None], device: str, repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def estimate_loop(batch: RankingBatch, device: str) -> float:
    """The loop's time for all P positives, from a run over a few of them (the loop is linear
    in the positives; the negatives' share is set by the lowest positive, kept in the subset)."""
    pos = torch.nonzero(batch.labels == 1).squeeze(1)
    lowest = pos[batch.logits[pos].argmin()]
    keep = torch.cat([lowest[None], pos[pos != lowest][: ESTIMATE_POSITIVES - 1]])
    labels = torch.where(batch.labels == 1, -1, batch.labels)
    labels[keep] = 1
    order = torch.nonzero(labels == 1).squeeze(1)
    loc = batch.loc_errors[: order.numel()]
    subset = RankingBatch(batch.logits, labels, loc)
    seconds = best_time(lambda: run_loop(subset), device, 1)
    return seconds / order.numel() * pos.numel()


def measure_peak(num_neg: int, num_pos: int, device: str) -> tuple[int, bool]:
    """Extra peak bytes of one sorted forward + backward, measured in a fresh process, and
    whether that is exact (False: a lower bound, the peak could not be reset after the inputs
    were built)."""
    cmd = [sys.executable, __file__, "--memory-worker", f"{num_neg}:{num_pos}", "--device", device]
    # A fixed mmap threshold makes glibc return every large block on free, so that blocks freed
    # while the inputs were built cannot be reused unseen by the resident-set measure.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return int(report["peak_bytes"]), bool(report["exact"])


def _peak_rss_bytes() -> int | None:
    """The process's peak resident set (VmHWM), or None where /proc does not tell it.

    Not ``ru_maxrss``: Linux carries that over from the parent across fork and exec, so a child
    of a big parent would read the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0) so that building the inputs does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(num_neg: int, num_pos: int, device: str) -> None:
    batch = _batch(num_neg, num_pos, device)
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_sorted(batch)
        _sync(device)
        peak, exact = torch.cuda.max_memory_allocated() - base, True
    else:
        exact = _reset_peak_rss()
        base = _peak_rss_bytes()
        if base is None:  # no /proc: ru_maxrss (KiB on Linux), a lower bound
            exact = False
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            run_sorted(batch)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        else:
            run_sorted(batch)
            peak = (_peak_rss_bytes() or base) - base
    print(json.dumps({"peak_bytes": max(peak, 0), "exact": exact}))


def bench_size(
    num_neg: int, num_pos: int, device: str, repeats: int, loop_budget_s: float = LOOP_BUDGET_S
) -> Row:
    batch = _batch(num_neg, num_pos, device)
    run_sorted(batch)  # warm-up
    sorted_s = best_time(lambda: run_sorted(batch), device, repeats)
    loop_s = estimate_loop(batch, device)
    estimated = loop_s > loop_budget_s
    if not estimated:
        loop_s = best_time(lambda: run_loop(batch), device, 1)
    peak, exact = measure_peak(num_neg, num_pos, device)
    return Row(device, num_neg, num_pos, sorted_s, loop_s, estimated, peak, exact)


def scored_batch(num: int, num_pos: int, kind: str, device: str, seed: int = 0):
    """float32 logits (num,), labels (num,) with ``num_pos`` positives, errors (num_pos,):
    "start" (scores near the 0.01 prior) or "trained" (negatives ~6 logits below)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num, generator=gen) * 0.5 - 4.6  # sigmoid(-4.6) ~ 0.01
    labels = torch.zeros(num, dtype=torch.long)
    index = torch.randperm(num, generator=gen)[:num_pos]
    labels[index] = 1
    if kind == "trained":
        logits = torch.randn(num, generator=gen) - 6.0
        logits[index] = torch.randn(num_pos, generator=gen)
    errors = torch.rand(num_pos, generator=gen)
    return logits.to(device), labels.to(device), errors.to(device)


FOCAL_TORCHVISION = "Focal Loss (torchvision's formula)"


def torchvision_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """torchvision.ops.sigmoid_focal_loss's formula, summed: (M,) logits, (M,) float 0/1
    targets. Fewer passes than the project's (which guards against overflow and handles
    ignored labels), so the ratios are also given against it, the faster of the two."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** gamma).sum()


def against_focal(num: int, num_pos: int, kind: str, device: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of aLRP, AP and Focal Loss (forward + backward) on the same
    batch, timed round-robin."""
    logits, labels, errors = scored_batch(num, num_pos, kind, device)

    def alrp() -> None:
        x, e = logits.clone().requires_grad_(), errors.clone().requires_grad_()
        out = alrp_loss(x, labels, e)
        (out.cls + out.loc).backward()

    def ap() -> None:
        x = logits.clone().requires_grad_()
        ap_loss(x, labels).backward()

    def focal() -> None:
        x = logits.clone().requires_grad_()
        sigmoid_focal_loss(x, labels).backward()

    targets = labels.to(logits.dtype)

    def focal_torchvision() -> None:
        x = logits.clone().requires_grad_()
        torchvision_focal_loss(x, targets).backward()

    runs = {
        "aLRP Loss": alrp,
        "AP Loss": ap,
        "Focal Loss": focal,
        FOCAL_TORCHVISION: focal_torchvision,
    }
    # The two Focal Losses must be the same loss for the comparison to mean anything.
    torch.testing.assert_close(
        torchvision_focal_loss(logits, targets),
        sigmoid_focal_loss(logits, labels),
        rtol=1e-4,
        atol=0,
    )
    best = {name: math.inf for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], best_time(fn, device, 1))
    return best


def render_against_focal(rows: list[tuple[str, int, int, str, dict[str, float]]]) -> Table:
    threads = torch.get_num_threads()
    table = Table(title=f"Against Focal Loss, forward + backward (CPU threads: {threads})")
    for name in ("device", "N", "P", "scores", "loss", "ms", "x Focal", "x faster Focal"):
        table.add_column(name, justify="right")
    for device, num, num_pos, kind, best in rows:
        faster = min(best["Focal Loss"], best[FOCAL_TORCHVISION])
        for name, seconds in best.items():
            table.add_row(
                device,
                f"{num:.1e}",
                str(num_pos),
                kind,
                name,
                f"{seconds * 1e3:.0f}",
                f"{seconds / best['Focal Loss']:.2f}",
                f"{seconds / faster:.2f}",
            )
    return table


def render(rows: list[Row], repeats: int) -> Table:
    threads = torch.get_num_threads()
    title = f"aLRP Loss, forward + backward (sorted: best of {repeats}; CPU threads: {threads})"
    table = Table(title=title)
    for name in (
        "device",
        "N",
        "P",
        "sorted (s)",
        "A.2 loop (s)",
        "speed-up",
        "sorted peak",
        "bytes / example",
    ):
        table.add_column(name, justify="right")
    for r in rows:
        if r.loop_estimated:
            loop = f"skipped (est. {r.loop_s:.0f}s)"
            ratio = f"~{r.loop_s / r.sorted_s:.0f}x (est.)"
        else:
            loop, ratio = f"{r.loop_s:.3f}", f"{r.loop_s / r.sorted_s:.1f}x"
        table.add_row(
            r.device,
            f"{r.num_neg:.0e}",
            str(r.num_pos),
            f"{r.sorted_s:.4f}",
            loop,
            ratio,
            f"{'' if r.peak_exact else '>= '}{r.peak_bytes / 2**20:.0f} MiB",
            f"{r.peak_bytes / (r.num_neg + r.num_pos):.0f}",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help=f"N:P pairs (default {DEFAULT_SIZES})")
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda or auto (cpu, and cuda when present)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: its own)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the sorted path")
    parser.add_argument(
        "--focal-sizes",
        default=None,
        help=f"N:P pairs of the table against Focal Loss (default {DEFAULT_FOCAL_SIZES}; none)",
    )
    parser.add_argument(
        "--loop-budget",
        type=float,
        default=LOOP_BUDGET_S,
        help="run the A.2 loop when its estimated time is at most this many seconds",
    )
    parser.add_argument("--quick", action="store_true", help=f"tiny sizes ({QUICK_SIZES})")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.memory_worker is not None:
        (size,) = parse_sizes(args.memory_worker)
        memory_worker(*size, args.device)
        return
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    default_sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    sizes = [] if args.sizes == "none" else parse_sizes(args.sizes or default_sizes)
    default_focal = QUICK_FOCAL_SIZES if args.quick else DEFAULT_FOCAL_SIZES
    focal_text = args.focal_sizes or default_focal
    focal_sizes = [] if focal_text == "none" else parse_sizes(focal_text)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    else:
        devices = [args.device]

    # Wide enough for the table when the output goes to a file or a pipe.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    rows = []
    for device in devices:
        for num_neg, num_pos in sizes:
            console.log(f"{device}: N={num_neg:.0e}, P={num_pos}")
            rows.append(bench_size(num_neg, num_pos, device, args.repeats, args.loop_budget))
    if rows:
        console.print(render(rows, args.repeats))
        log_speedups = [math.log(r.loop_s / r.sorted_s) for r in rows]
        console.print(f"geometric-mean speed-up {math.exp(sum(log_speedups) / len(rows)):.0f}x")
    focal_rows = []
    for device in devices:
        for num, num_pos in focal_sizes:
            for kind in ("start", "trained"):
                console.log(f"{device}: against Focal Loss, N={num:.1e}, P={num_pos}, {kind}")
                best = against_focal(num, num_pos, kind, device, args.repeats)
                focal_rows.append((device, num, num_pos, kind, best))
    if focal_rows:
        console.print(render_against_focal(focal_rows))


if __name__ == "__main__":
    main()
