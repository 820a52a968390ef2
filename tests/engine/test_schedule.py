from __future__ import annotations

import pytest

from alrp_lab.engine.schedule import learning_rate

KW = dict(warmup_iters=500, warmup_ratio=1e-3, lr_steps=[60, 80], lr_decay=0.1)


def test_warmup_starts_at_ratio_and_reaches_base():
    assert learning_rate(0.008, 0, 0, **KW) == pytest.approx(0.008 * 1e-3)
    assert learning_rate(0.008, 250, 0, **KW) == pytest.approx(0.008 * (0.5 + 0.5e-3))
    assert learning_rate(0.008, 500, 0, **KW) == pytest.approx(0.008)


def test_step_decay_after_listed_epochs():
    assert learning_rate(0.008, 10_000, 59, **KW) == pytest.approx(0.008)
    assert learning_rate(0.008, 10_000, 60, **KW) == pytest.approx(0.0008)
    assert learning_rate(0.008, 10_000, 80, **KW) == pytest.approx(0.00008)


def test_no_warmup():
    assert learning_rate(0.01, 0, 0, **{**KW, "warmup_iters": 0}) == pytest.approx(0.01)
