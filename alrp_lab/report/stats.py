"""Statistics over seeds: mean, standard deviation, and 95% intervals for claims.

Pure Python (no numpy, no scipy): the report reads results files on any machine. Student's
t quantiles come from the regularised incomplete beta function (Numerical Recipes' continued
fraction) inverted by bisection, which is exact to well below the printed precision.

Intervals:

- a difference of two means: Welch's t interval (unequal variances, Welch-Satterthwaite
  degrees of freedom); a side that is a constant contributes no variance;
- any other statistic of several cells (the spread of means, ``max - min``): a percentile
  bootstrap that resamples each cell's seeds independently, with a fixed generator seed so
  the same results files always give the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Summary",
    "bootstrap_interval",
    "finite_number",
    "student_t_quantile",
    "summarize",
    "welch_interval",
]

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 0


def finite_number(value: object) -> float | None:
    """A number read from a results file as a finite float; None for null, NaN, infinity,
    a bool or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Summary:
    """Values over seeds: ``n`` runs, their ``mean`` and sample standard deviation ``std``
    (ddof 1; None when n < 2). ``mean`` is None when n == 0."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return math.fsum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def variance_of_mean(self) -> float | None:
        """std**2 / n, the squared standard error; None when n < 2."""
        std = self.std
        return None if std is None else std * std / self.n


def summarize(values: Sequence[float]) -> Summary:
    """A :class:`Summary` of finite ``values`` (non-finite ones are a caller's bug)."""
    values = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"cannot summarise non-finite values {values}")
    return Summary(values)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0, not necessarily whole) degrees of
    freedom; e.g. ``student_t_quantile(0.975, 2)`` is 4.303."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def welch_interval(
    a: Summary, b: Summary | float, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(difference of means a - b, low, high) of Welch's t interval.

    ``b`` may be a constant (a one-sample interval for a). Every non-constant side needs
    n >= 2 (raises :class:`ValueError` otherwise). Sides without spread give a point interval.
    """
    parts = [a] if not isinstance(b, Summary) else [a, b]
    if any(s.n < 2 for s in parts):
        raise ValueError("a t interval needs at least 2 seeds on every side")
    b_mean = b.mean if isinstance(b, Summary) else float(b)
    diff = a.mean - b_mean
    variances = [s.variance_of_mean for s in parts]
    se2 = math.fsum(variances)
    if se2 == 0.0:
        return diff, diff, diff
    # Welch-Satterthwaite degrees of freedom; terms of zero variance drop out.
    df = se2 * se2 / math.fsum(v * v / (s.n - 1) for v, s in zip(variances, parts, strict=True))
    half = student_t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    return diff, diff - half, diff + half


def bootstrap_interval(
    samples: Sequence[Summary],
    statistic: Callable[[list[float]], float],
    confidence: float = CONFIDENCE,
    *,
    n_resamples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(statistic of the means, low, high): a percentile bootstrap of ``statistic``, a
    function of the cells' means, resampling each cell's seeds with replacement.

    Every cell needs n >= 2 (raises :class:`ValueError` otherwise). Deterministic in ``seed``.
    """
    if any(s.n < 2 for s in samples):
        raise ValueError("a bootstrap interval needs at least 2 seeds in every cell")
    rng = random.Random(seed)
    observed = statistic([s.mean for s in samples])
    draws = []
    for _ in range(n_resamples):
        means = [math.fsum(rng.choices(s.values, k=s.n)) / s.n for s in samples]
        draws.append(statistic(means))
    draws.sort()
    alpha = (1.0 - confidence) / 2.0

    def quantile(q: float) -> float:
        position = q * (len(draws) - 1)
        lo = math.floor(position)
        hi = min(lo + 1, len(draws) - 1)
        return draws[lo] + (draws[hi] - draws[lo]) * (position - lo)

    return observed, quantile(alpha), quantile(1.0 - alpha)
