"""Self-balance (SB) of aLRP Loss, Section 4.2: the weight of the localisation term.

SB starts at ``init`` (50, Table 4) and after every epoch becomes
(mean L_cls + mean L_loc) / mean L_loc over that epoch's iterations, L_loc taken before
scaling (SPEC section 1). With ``enabled=False`` it is the constant weight wr of Table 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["SelfBalance"]


def _as_float(value: float | Tensor, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar loss, got shape {tuple(value.shape)}")
        return float(value.detach().item())
    return float(value)


class SelfBalance(nn.Module):
    """The SB weight and the epoch statistics that update it.

    ``weight`` is a persistent 0-d float64 buffer, so it is saved in checkpoints and follows
    ``.to(device)``. The epoch sums are plain Python floats, not buffers: DDP broadcasts buffers
    from rank 0 at every forward, which would wipe the other ranks' sums.

    Non-finite losses are skipped by ``update`` (and counted in ``skipped``) rather than raised:
    one NaN must not poison SB for the rest of training, and raising on a single rank would
    leave the others waiting in the epoch's all-reduce. Detecting divergence is the training
    loop's job.
    """

    weight: Tensor

    def __init__(self, init: float = 50.0, enabled: bool = True) -> None:
        super().__init__()
        if not (math.isfinite(init) and init > 0):
            raise ValueError(f"the self-balance init must be a finite number > 0, got {init}")
        self.init = float(init)
        self.enabled = bool(enabled)
        self.register_buffer("weight", torch.tensor(self.init, dtype=torch.float64))
        self._reset()

    def _reset(self) -> None:
        self.sum_cls = 0.0
        self.sum_loc = 0.0
        self.count = 0
        self.skipped = 0

    @property
    def value(self) -> float:
        """The current weight as a Python float."""
        return float(self.weight.item())

    def forward(self, loc_loss: Tensor) -> Tensor:
        """Scale the localisation loss: loc_loss (any shape) -> loc_loss * SB, same dtype."""
        # Cast so a float32 loss stays float32 (a 0-d float64 weight would promote 0-d losses).
        return loc_loss * self.weight.to(device=loc_loss.device, dtype=loc_loss.dtype)

    def update(self, cls_loss: float | Tensor, loc_loss: float | Tensor) -> None:
        """Record one iteration's unscaled losses (floats or 0-d tensors; detached here)."""
        cls_value = _as_float(cls_loss, "cls_loss")
        loc_value = _as_float(loc_loss, "loc_loss")
        if not (math.isfinite(cls_value) and math.isfinite(loc_value)):
            self.skipped += 1
            return
        self.sum_cls += cls_value
        self.sum_loc += loc_value
        self.count += 1

    def step_epoch(self, all_reduce: Callable[[Tensor], Tensor | None] | None = None) -> float:
        """End the epoch: update SB from the epoch's means (when enabled), reset the sums.

        Args:
            all_reduce: optional callable summing a CPU float64 tensor (3,) =
                [sum_cls, sum_loc, count] across processes and returning it; a callable that
                reduces in place and returns None (``torch.distributed.all_reduce`` on a gloo
                group) also works. Every rank must call ``step_epoch`` with it, even one that
                saw no iteration, so the collective never hangs.

        Returns:
            The weight for the next epoch. It is kept unchanged when disabled, when no
            iteration was recorded on any rank, or when the mean L_loc is not positive.
        """
        if self.enabled:
            stats = torch.tensor(
                [self.sum_cls, self.sum_loc, float(self.count)], dtype=torch.float64
            )
            if all_reduce is not None:
                reduced = all_reduce(stats)
                stats = stats if reduced is None else reduced
                if not isinstance(stats, Tensor) or stats.numel() != 3:
                    raise ValueError(
                        "all_reduce must return the summed tensor [sum_cls, sum_loc, count] "
                        f"(or None after reducing in place), got {stats!r}"
                    )
            sum_cls, sum_loc, count = (float(v) for v in stats.reshape(-1).tolist())
            # (mean cls + mean loc) / mean loc: the count cancels, so only the sums matter.
            if count > 0 and sum_loc > 0 and math.isfinite(sum_cls + sum_loc):
                self.weight.fill_((sum_cls + sum_loc) / sum_loc)
        self._reset()
        return self.value

    def extra_repr(self) -> str:
        return (
            f"weight={self.value:.4f}, init={self.init}, enabled={self.enabled}, "
            f"iterations={self.count}, skipped={self.skipped}"
        )
