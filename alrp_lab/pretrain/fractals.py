"""Formula-driven images: fractal categories from iterated function systems (FractalDB).

Kataoka et al. (ACCV 2020) pretrain a CNN to classify fractals, each category one iterated
function system (IFS) of 2-4 affine maps, and show that it transfers to natural images
without one natural image. This module makes such categories and renders instances of
them, deterministically from a seed, in numpy; :mod:`alrp_lab.pretrain.train` trains on them.

An IFS is an array (K, 6) of maps ``(a, b, c, d, e, f)``: ``x' = a x + b y + e``,
``y' = c x + d y + f``, chosen with probability proportional to ``|ad - bc|`` (FractalDB's
rule). An instance of a category multiplies one parameter of one map by a factor in
[0.8, 1.2] (FractalDB's intra-category variation), then is drawn in colour on a coloured,
noisy background at a random position and size, mirrored at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FractalCategories", "sample_categories", "render_batch", "filling_rate"]

_MAX_MAPS = 4
# Chaos-game chains per image and the points each keeps after its burn-in.
_CHAINS = 256
_BURN_IN = 12
_STEPS = 40
# Largest rotation of an instance, in radians: none, as FractalDB (with rotations the
# categories were learnt at half the accuracy in the same steps).
ROTATION = 0.0


@dataclass(frozen=True)
class FractalCategories:
    """``maps`` (C, K, 6) affine maps (unused slots zero), ``probs`` (C, K) their
    probabilities (zero for unused slots)."""

    maps: np.ndarray
    probs: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.maps.shape[0])


def _probabilities(maps: np.ndarray, used: np.ndarray) -> np.ndarray:
    det = np.abs(maps[..., 0] * maps[..., 3] - maps[..., 1] * maps[..., 2]) * used
    total = det.sum(axis=-1, keepdims=True)
    return det / np.where(total > 0, total, 1.0)


def _chaos_points(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Points (B, _CHAINS * _STEPS, 2) of the attractors of B systems (B, K, 6)."""
    batch = maps.shape[0]
    cum = np.cumsum(probs, axis=-1)
    cum[:, -1] = 1.0 + 1e-9  # every draw below 1 finds a map
    xy = rng.uniform(-1.0, 1.0, size=(batch, _CHAINS, 2))
    kept = np.empty((batch, _STEPS, _CHAINS, 2))
    rows = np.arange(batch)[:, None]
    for step in range(_BURN_IN + _STEPS):
        u = rng.random((batch, _CHAINS, 1))
        choice = (u > cum[:, None, :]).sum(axis=-1)  # (B, chains) map index
        m = maps[rows, choice]  # (B, chains, 6)
        x, y = xy[..., 0], xy[..., 1]
        xy = np.stack(
            (m[..., 0] * x + m[..., 1] * y + m[..., 4], m[..., 2] * x + m[..., 3] * y + m[..., 5]),
            axis=-1,
        )
        # A map that is not contracting could throw points far away; keep them finite.
        xy = np.clip(xy, -1e3, 1e3)
        if step >= _BURN_IN:
            kept[:, step - _BURN_IN] = xy
    return kept.reshape(batch, _STEPS * _CHAINS, 2)


def _normalise(points: np.ndarray) -> np.ndarray:
    """Fit each point set (B, N, 2) into [0, 1]^2 by its 1st-99th percentile box."""
    lo = np.percentile(points, 1, axis=1, keepdims=True)
    hi = np.percentile(points, 99, axis=1, keepdims=True)
    span = np.maximum((hi - lo).max(axis=-1, keepdims=True), 1e-6)
    centre = (lo + hi) / 2
    return (points - centre) / span + 0.5


def filling_rate(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator, size: int = 64):
    """(B,) the fraction of a ``size`` x ``size`` grid the normalised attractors cover
    (FractalDB keeps a system only above a threshold: no dust, no single line)."""
    pts = _normalise(_chaos_points(maps, probs, rng))
    ij = np.clip((pts * (size - 1)).round().astype(np.int64), 0, size - 1)
    flat = ij[..., 1] * size + ij[..., 0]
    return np.array([np.unique(f).size / size**2 for f in flat])


def sample_categories(
    num_classes: int, seed: int, min_fill: float = 0.08, max_tries: int = 200
) -> FractalCategories:
    """``num_classes`` IFS categories with 2-4 maps, parameters uniform in [-1, 1], kept when
    every map contracts (both singular values below 1) and the attractor fills at least
    ``min_fill`` of a 64 x 64 grid. Deterministic in ``seed``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    rng = np.random.default_rng(seed)
    maps = np.zeros((num_classes, _MAX_MAPS, 6))
    used = np.zeros((num_classes, _MAX_MAPS))
    found = 0
    for _ in range(max_tries):
        batch = 64
        k = rng.integers(2, _MAX_MAPS + 1, size=batch)
        cand = rng.uniform(-1.0, 1.0, size=(batch, _MAX_MAPS, 6))
        mask = (np.arange(_MAX_MAPS)[None, :] < k[:, None]).astype(float)
        cand *= mask[..., None]
        lin = cand[..., :4].reshape(batch, _MAX_MAPS, 2, 2)
        sv = np.linalg.svd(lin, compute_uv=False).max(axis=-1)  # (batch, K)
        contracting = np.all((sv < 1.0) | (mask == 0), axis=-1)
        probs = _probabilities(cand, mask)
        fill = filling_rate(cand, probs, rng)
        good = np.flatnonzero(contracting & (fill >= min_fill))
        take = good[: num_classes - found]
        maps[found : found + take.size] = cand[take]
        used[found : found + take.size] = mask[take]
        found += take.size
        if found == num_classes:
            return FractalCategories(maps, _probabilities(maps, used))
    raise RuntimeError(
        f"found only {found} of {num_classes} fractal categories in {max_tries} tries; "
        "lower min_fill"
    )


def render_batch(
    categories: FractalCategories, labels: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Images (B, 3, size, size) float32 in [0, 1] of instances of ``labels`` (B,).

    Per image: one parameter of one map times a factor in [0.8, 1.2], the attractor
    mirrored at random (rotated by up to :data:`ROTATION`), scaled to 40-95% of the image and
    placed at random, drawn in a colour that contrasts with a random background colour
    (opaquer where points are dense), with a smooth gradient and noise.
    """
    labels = np.asarray(labels, dtype=np.int64)
    batch = labels.size
    maps = categories.maps[labels].copy()
    probs = categories.probs[labels]
    which = np.array([rng.choice(np.flatnonzero(p > 0)) for p in probs])
    param = rng.integers(0, 6, size=batch)
    maps[np.arange(batch), which, param] *= rng.uniform(0.8, 1.2, size=batch)
    pts = _normalise(_chaos_points(maps, probs, rng)) - 0.5  # (B, N, 2) in about [-.5, .5]

    angle = rng.uniform(-1, 1, size=batch) * ROTATION
    flip = np.where(rng.random(batch) < 0.5, -1.0, 1.0)
    scale = rng.uniform(0.4, 0.95, size=batch) * size
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack((np.stack((cos * flip, -sin), -1), np.stack((sin * flip, cos), -1)), -2)
    pts = np.einsum("bij,bnj->bni", rot, pts) * scale[:, None, None]
    margin = (size - scale * 0.75) / 2
    centre = size / 2 + rng.uniform(-1, 1, size=(batch, 2)) * margin[:, None].clip(min=0)
    ij = np.floor(pts + centre[:, None, :]).astype(np.int64)
    inside = (ij >= 0).all(-1) & (ij < size).all(-1)

    density = np.zeros((batch, size * size))
    for b in range(batch):
        flat = ij[b, inside[b], 1] * size + ij[b, inside[b], 0]
        density[b] = np.bincount(flat, minlength=size * size)
    density = density.reshape(batch, 1, size, size)
    alpha = np.clip(
        density / np.maximum(np.percentile(density, 99, axis=(2, 3), keepdims=True), 1), 0, 1
    )
    alpha = np.where(density > 0, 0.35 + 0.65 * alpha, 0.0)

    bg = rng.uniform(0, 1, size=(batch, 3, 1, 1))
    # The fractal's colour keeps its distance from the background's (at least 0.35 in one
    # channel's worth of contrast), so every instance is visible.
    fg = (
        bg
        + rng.uniform(0.35, 0.65, size=(batch, 3, 1, 1))
        * rng.choice([-1, 1], size=(batch, 3, 1, 1))
    ) % 1.0
    ramp = np.linspace(-0.5, 0.5, size)
    direction = rng.uniform(-0.4, 0.4, size=(batch, 2, 1, 1, 1))
    gradient = (
        direction[:, 0] * ramp[None, None, :, None] + direction[:, 1] * ramp[None, None, None, :]
    )
    background = bg + gradient
    image = alpha * fg + (1 - alpha) * background
    image += rng.normal(0, 0.03, size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32)
