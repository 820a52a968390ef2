"""Fractal categories and their rendering: deterministic, contracting, images in range."""

from __future__ import annotations

import numpy as np
import pytest

from alrp_lab.pretrain.fractals import filling_rate, render_batch, sample_categories


def test_categories_are_deterministic_contracting_and_filled() -> None:
    a = sample_categories(5, seed=11)
    b = sample_categories(5, seed=11)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.array_equal(a.maps, sample_categories(5, seed=12).maps)
    used = a.probs > 0
    assert used.sum(axis=1).min() >= 2 and used.sum(axis=1).max() <= 4
    np.testing.assert_allclose(a.probs.sum(axis=1), 1.0)
    lin = a.maps[..., :4].reshape(5, 4, 2, 2)[used]
    assert np.linalg.svd(lin, compute_uv=False).max() < 1.0
    fill = filling_rate(a.maps, a.probs, np.random.default_rng(0))
    assert fill.min() >= 0.05  # sampled at >= 0.08 with another draw of points


def test_render_shapes_range_and_determinism() -> None:
    cats = sample_categories(3, seed=1)
    labels = np.array([0, 1, 2, 0])
    x = render_batch(cats, labels, 40, np.random.default_rng(5))
    y = render_batch(cats, labels, 40, np.random.default_rng(5))
    assert x.shape == (4, 3, 40, 40) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(x, y)
    # Two instances of one class differ (pose, colour, parameter jitter).
    assert np.abs(x[0] - x[3]).mean() > 0.01


def test_bad_class_count() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        sample_categories(0, seed=0)
