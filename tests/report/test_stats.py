from __future__ import annotations

import math
import random

import pytest

from alrp_lab.report.stats import (
    bootstrap_interval,
    student_t_quantile,
    summarize,
    welch_interval,
)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    # Printed t tables (two-sided 95%, one-sided 90% and 99.5%).
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 4, 2.776),
        (0.975, 30, 2.042),
        (0.95, 10, 1.812),
        (0.995, 5, 4.032),
        (0.975, 1e7, 1.960),
    ],
)
def test_t_quantiles_match_printed_tables(p, df, expected):
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=1e-3)
    assert student_t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-3)


def test_summary_is_mean_and_sample_std():
    s = summarize([1.0, 2.0, 4.0])
    assert (s.n, s.mean) == (3, pytest.approx(7 / 3))
    assert s.std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert summarize([5.0]).std is None and summarize([]).mean is None
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])


def test_welch_interval_by_hand():
    a, b = summarize([10.0, 12.0, 14.0]), summarize([9.0, 9.5, 10.0])
    diff, low, high = welch_interval(a, b)
    va, vb = 4.0 / 3, 0.25 / 3  # s^2 / n
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = student_t_quantile(0.975, df) * math.sqrt(va + vb)
    assert diff == pytest.approx(2.5)
    assert (low, high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))


def test_welch_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(1234)
    hits, trials = 0, 2000
    for _ in range(trials):
        a = summarize([rng.gauss(1.0, 1.0) for _ in range(4)])
        b = summarize([rng.gauss(0.0, 2.0) for _ in range(3)])
        _, low, high = welch_interval(a, b)
        hits += low <= 1.0 <= high
    assert 0.93 < hits / trials < 0.97


def test_constant_sides_and_too_few_seeds():
    assert welch_interval(summarize([1.0, 1.0, 1.0]), 1.0) == (0.0, 0.0, 0.0)
    _, low, high = welch_interval(summarize([2.0, 3.0]), 0.0)
    assert low < 2.5 < high
    with pytest.raises(ValueError, match="at least 2 seeds"):
        welch_interval(summarize([1.0]), summarize([1.0, 2.0]))


def test_bootstrap_is_deterministic_and_brackets_the_statistic():
    cells = [summarize([1.0, 1.2, 0.9]), summarize([3.0, 3.3, 2.8])]
    spread = lambda means: max(means) - min(means)  # noqa: E731
    first = bootstrap_interval(cells, spread)
    assert first == bootstrap_interval(cells, spread)
    value, low, high = first
    assert value == pytest.approx(3.0333 - 1.0333, abs=1e-3)
    assert low <= value <= high and high - low < 1.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        bootstrap_interval([summarize([1.0])], spread)
