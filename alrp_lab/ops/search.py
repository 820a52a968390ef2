"""Searching many values into a few sorted edges: ``torch.searchsorted(side="right")``, faster.

The ranking losses search every negative (millions) into the window edges of the positives (a
few thousand). ``torch.searchsorted`` does one branchy binary search per value, and on CPU
that is most of the loss's time. :func:`searchsorted_right` finds the same positions with a
handful of branch-free passes instead: a uniform grid over the edges' range sends each value to
a cell, a table gives the number of edges in the cells before it, and the few edges inside the
cell (at most ``max_per_cell``) are compared one pass each.

It is exact, not approximate: the cell of a number is computed by one sequence of monotone
floating-point operations, applied alike to the values and to the edges, so an edge in an
earlier cell is below every value of a later one and an edge in a later cell above it; only
edges in the value's own cell are compared, exactly as the binary search would.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["searchsorted_right"]

# Grid cells per edge: more cells leave fewer edges per cell (fewer compare passes) but a
# larger table; at 8, random edges share a cell with at most two others.
CELLS_PER_EDGE = 8
# Above this many edges in one cell the compare passes would cost more than the binary search.
MAX_PER_CELL = 8


def _cells(x: Tensor, low: Tensor, scale: Tensor, num_cells: int) -> Tensor:
    """The grid cell (same shape, int32) of every number: monotone non-decreasing in ``x``.

    NaN and +inf go to the last cell, -inf to the first, like any number beyond the edges.
    """
    cell = (x - low).mul_(scale)
    cell.nan_to_num_(nan=num_cells, posinf=num_cells, neginf=0.0).clamp_(0, num_cells - 1)
    return cell.to(torch.int32)  # int32 indexes as well as int64, in half the memory


def searchsorted_right(
    edges: Tensor,
    values: Tensor,
    cells_per_edge: int = CELLS_PER_EDGE,
    max_per_cell: int = MAX_PER_CELL,
) -> Tensor:
    """``torch.searchsorted(edges, values, side="right", out_int32=True)``: the number of edges
    ``<= v``, as int32 (it indexes like int64 in half the memory traffic, which is the cost).

    Args:
        edges: (E,) ascending, finite, in ``values``' dtype.
        values: (V,) any floats; NaN counts as above every edge, as in ``torch.searchsorted``.
        cells_per_edge: grid cells per edge.
        max_per_cell: above this many edges in one cell, fall back to the binary search.

    Returns:
        (V,) int32, equal to ``torch.searchsorted``'s result. The grid path runs on CPU only
        (on a GPU the binary search is already parallel) and costs one host sync.
    """
    num_edges = edges.numel()
    if values.device.type != "cpu" or num_edges == 0 or values.numel() < 4 * num_edges:
        return torch.searchsorted(edges, values, side="right", out_int32=True)
    num_cells = cells_per_edge * num_edges
    low = edges[0]
    span = edges[-1] - low
    scale = torch.where(span > 0, num_cells / span, torch.ones_like(span))
    per_cell = torch.bincount(_cells(edges, low, scale, num_cells), minlength=num_cells)
    most = int(per_cell.max())
    if most > max_per_cell:
        return torch.searchsorted(edges, values, side="right", out_int32=True)
    # Edges in the cells before each cell: every one of them is <= any value in the cell.
    before = torch.cat([per_cell.new_zeros(1), per_cell.cumsum(0)[:-1]]).to(torch.int32)
    first = before.index_select(0, _cells(values, low, scale, num_cells))
    # position = first + (edges of the cell <= v), counted as "not above" so that NaN counts
    # every compare. The padding (+inf) and the edges after the cell's own are above any finite
    # value, so their compares add nothing; NaN and +inf count them all and the clamp then puts
    # them past the last edge, where the binary search puts them.
    padded = torch.cat([edges, edges.new_full((most,), float("inf"))])
    position = first + (padded.index_select(0, first) > values).logical_not_()
    for k in range(1, most):
        position += (padded.index_select(0, first + k) > values).logical_not_()
    return position.clamp_(max=num_edges)
