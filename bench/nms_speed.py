"""Time the pure-torch NMS against torchvision's kernel (when importable) in one run.

Usage: python bench/nms_speed.py [--sizes 1000 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from alrp_lab.ops.nms import batched_nms, nms, torchvision_available


def _detections(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, 4) boxes on a 512 px image, (n,) scores, (n,) labels of 80 classes."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=gen) * 512
    wh = torch.rand(n, 2, generator=gen) * 100 + 10
    boxes = torch.cat((centres - wh / 2, centres + wh / 2), dim=1)
    return boxes, torch.rand(n, generator=gen), torch.randint(0, 80, (n,), generator=gen)


def _best_time(fn, repeat: int) -> float:
    fn()  # warm-up: first calls pay for allocator and dispatcher set-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"torchvision kernel available: {torchvision_available()}")
    for n in args.sizes:
        boxes, scores, labels = _detections(n, seed=n)
        rows = {
            "nms": lambda b=boxes, s=scores, fast=False: nms(b, s, 0.5, use_torchvision=fast),
            "batched_nms": lambda b=boxes, s=scores, c=labels, fast=False: batched_nms(
                b, s, c, 0.5, use_torchvision=fast
            ),
        }
        for name, fn in rows.items():
            pure = _best_time(fn, args.repeat)
            line = f"N={n:6d} {name:12s} pure torch {pure * 1e3:8.1f} ms"
            if torchvision_available():
                fast = _best_time(lambda fn=fn: fn(fast=True), args.repeat)
                line += f"  torchvision {fast * 1e3:8.1f} ms  ratio {pure / fast:6.1f}x"
            print(line)


if __name__ == "__main__":
    main()
