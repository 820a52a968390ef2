"""Random positive/negative sampling of assigned anchors or RoIs (the cross-entropy baselines).

Faster R-CNN's baselines train the RPN on 256 anchors per image (half positives at most) and
the RoI head on 512 RoIs per image (a quarter positives at most), drawn at random after
assignment (mmdetection's ``RandomSampler``). aLRP Loss uses no sampler: it ranks them all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alrp_lab.assigners.result import BACKGROUND, IGNORED, AssignResult

__all__ = ["RandomSampler"]


class RandomSampler:
    """Keep at most ``num`` examples per image, at most ``num * pos_fraction`` positive.

    Args:
        num: examples kept per image.
        pos_fraction: largest share of positives; negatives fill the rest of ``num``.
        neg_pos_ub: when >= 0, at most ``neg_pos_ub`` negatives per kept positive (at least
            one negative is kept when there are no positives); -1 leaves it unbounded.

    Draws use ``torch.randperm`` with the given generator, or the global RNG (which the
    training loop seeds) when none is given.
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: int = -1) -> None:
        if int(num) != num or num < 1:
            raise ValueError(f"sampler num must be an integer >= 1, got {num}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"sampler pos_fraction must lie in [0, 1], got {pos_fraction}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = int(neg_pos_ub)

    def __repr__(self) -> str:
        return (
            f"RandomSampler(num={self.num}, pos_fraction={self.pos_fraction}, "
            f"neg_pos_ub={self.neg_pos_ub})"
        )

    @staticmethod
    def _choose(candidates: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
        if candidates.numel() <= count:
            return candidates
        perm = torch.randperm(candidates.numel(), generator=generator)[:count]
        return candidates[perm.to(candidates.device)]

    def sample(
        self, matched_gt: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw the kept positives and negatives.

        Args:
            matched_gt: (A,) long, an ``AssignResult.matched_gt`` (>= 0 positive, -1
                background, -2 ignored).
            generator: optional CPU RNG.

        Returns:
            pos_index (P,) and neg_index (N,), long indices into ``matched_gt`` (ascending),
            P <= num * pos_fraction and P + N <= num.
        """
        positives = (matched_gt >= 0).nonzero().squeeze(1)
        negatives = (matched_gt == BACKGROUND).nonzero().squeeze(1)
        pos = self._choose(positives, int(self.num * self.pos_fraction), generator)
        num_neg = self.num - pos.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, max(1, pos.numel()) * self.neg_pos_ub)
        neg = self._choose(negatives, num_neg, generator)
        return pos.sort().values, neg.sort().values

    def subsample(
        self, assign: AssignResult, generator: torch.Generator | None = None
    ) -> AssignResult:
        """The assignment with every example not drawn marked ignored (-2).

        Returns a new AssignResult (A,); ``max_iou`` is unchanged.
        """
        pos, neg = self.sample(assign.matched_gt, generator)
        matched = torch.full_like(assign.matched_gt, IGNORED)
        matched[pos] = assign.matched_gt[pos]
        matched[neg] = BACKGROUND
        return AssignResult(matched_gt=matched, max_iou=assign.max_iou)
