"""RetinaNet-style anchors over the levels of a feature pyramid (SPEC section 4).

Level l has stride ``s_l``; every location carries ``len(ratios) * scales_per_octave``
anchors of side ``s_l * octave_base_scale * 2^(k / scales_per_octave)``, k = 0..spo-1,
reshaped to each aspect ratio ``h / w = r`` at constant area.

Centre convention: the anchors of feature cell (y, x) are centred on the pixel point
``(x * s_l, y * s_l)``, i.e. mmdetection v2's ``center_offset=0`` and torchvision's
``AnchorGenerator``. The aLRP Loss authors' code is built on mmdetection v2, so this keeps
assignments (and hence the paper's numbers) comparable; a half-stride shift would be
defensible geometrically but matches neither reference.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["AnchorGenerator"]

# Test-time images vary in size, so the cache keeps only the most recent grids.
_CACHE_SIZE = 64


class AnchorGenerator:
    """Anchors for every level of a pyramid, one ``(H_l * W_l * A, 4)`` tensor per level.

    Args:
        strides: pixel stride of each level (P3..P7 by default).
        octave_base_scale: anchor side at k = 0, in units of the stride.
        scales_per_octave: number of octave scales ``2^(k / scales_per_octave)``.
        ratios: aspect ratios ``h / w``.

    Within a location the A anchors run ratio-major (all scales of ``ratios[0]``, then
    ``ratios[1]``, ...), mmdetection's order. Returned tensors are cached and shared
    between calls: do not modify them in place.
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        octave_base_scale: float = 4,
        scales_per_octave: int = 2,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"AnchorGenerator strides must be positive, got {tuple(strides)}")
        if not self.ratios or min(self.ratios) <= 0:
            raise ValueError(f"AnchorGenerator ratios must be positive, got {tuple(ratios)}")
        if octave_base_scale <= 0:
            raise ValueError(f"octave_base_scale must be positive, got {octave_base_scale}")
        if int(scales_per_octave) != scales_per_octave or scales_per_octave < 1:
            raise ValueError(f"scales_per_octave must be an integer >= 1, got {scales_per_octave}")
        self.octave_base_scale = float(octave_base_scale)
        self.scales_per_octave = int(scales_per_octave)
        self.cell_anchors = [self._cell_anchors(s) for s in self.strides]
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()

    @property
    def num_anchors_per_location(self) -> int:
        """A: anchors at every feature-map location (the same on every level)."""
        return len(self.ratios) * self.scales_per_octave

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def _cell_anchors(self, stride: int) -> Tensor:
        """(A, 4) float64 anchors of one location centred on the origin."""
        k = torch.arange(self.scales_per_octave, dtype=torch.float64)
        sides = stride * self.octave_base_scale * 2.0 ** (k / self.scales_per_octave)
        h_ratios = torch.tensor(self.ratios, dtype=torch.float64).sqrt()
        # Ratio-major: row r holds the scales of ratio r; w * h = side^2 and h / w = ratio.
        ws = (sides[None, :] / h_ratios[:, None]).reshape(-1)
        hs = (sides[None, :] * h_ratios[:, None]).reshape(-1)
        return torch.stack((-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs), dim=-1)

    def _grid(self, level: int, height: int, width: int) -> Tensor:
        """(H * W * A, 4) float64 anchors of one level, ordered (y, x, anchor)."""
        stride = self.strides[level]
        xs = torch.arange(width, dtype=torch.float64) * stride
        ys = torch.arange(height, dtype=torch.float64) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors[level][None]).reshape(-1, 4)

    def __call__(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors for feature maps of the given sizes.

        Args:
            feature_sizes: one (H_l, W_l) per level, in the order of ``strides``.
            device: where the anchors live (CPU by default).
            dtype: floating dtype of the anchors.

        Returns:
            One (H_l * W_l * A, 4) tensor (x1, y1, x2, y2) per level, ordered (y, x, anchor)
            so it lines up with a head output permuted to (B, H, W, A, K).
        """
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"AnchorGenerator has {self.num_levels} levels (strides {self.strides}) but "
                f"got {len(feature_sizes)} feature sizes; pass one (H, W) per level"
            )
        device = torch.device("cpu" if device is None else device)
        out = []
        for level, size in enumerate(feature_sizes):
            if len(size) != 2:
                raise ValueError(f"feature size of level {level} must be (H, W), got {size}")
            height, width = int(size[0]), int(size[1])
            if height < 0 or width < 0:
                raise ValueError(f"feature size of level {level} is negative: {tuple(size)}")
            key = (level, height, width, device, dtype)
            anchors = self._cache.get(key)
            if anchors is None:
                anchors = self._grid(level, height, width).to(device=device, dtype=dtype)
                self._cache[key] = anchors
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            out.append(anchors)
        return out
