"""Learning-rate schedule of the paper's recipe: linear warm-up, then step decay by epoch.

The rate is a pure function of (iteration, epoch), so nothing about it needs saving in a
checkpoint: a resumed run recomputes it.
"""

from __future__ import annotations

from collections.abc import Sequence


def learning_rate(
    base_lr: float,
    iteration: int,
    epoch: int,
    *,
    warmup_iters: int,
    warmup_ratio: float,
    lr_steps: Sequence[int],
    lr_decay: float,
) -> float:
    """Rate for global ``iteration`` (0-based) inside ``epoch`` (0-based).

    Warm-up rises linearly from ``warmup_ratio * base_lr`` at iteration 0 to ``base_lr`` at
    ``warmup_iters``; after each epoch listed in ``lr_steps`` (1-based epoch counts, as the
    paper's "decay at epochs 60 and 80") the rate is multiplied by ``lr_decay``.
    """
    decays = sum(1 for step in lr_steps if epoch >= step)
    lr = base_lr * (lr_decay**decays)
    if warmup_iters > 0 and iteration < warmup_iters:
        alpha = iteration / warmup_iters
        lr *= warmup_ratio * (1 - alpha) + alpha
    return lr
