"""searchsorted_right: the grid search gives torch.searchsorted's positions exactly."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.ops.search import searchsorted_right


def _edges(seed: int, kind: str, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    num = int(torch.randint(1, 60, (1,), generator=gen))
    e = torch.randn(num, generator=gen, dtype=torch.float64) * float(
        torch.rand(1, generator=gen) * 10
    )
    if kind == "ties":
        e = e.round()
    elif kind == "near-ties":  # pairs one float32 ulp or so apart share a cell
        e = torch.cat([e, e + 1e-7])
    elif kind == "all-equal":
        e = torch.full((num,), 2.5, dtype=torch.float64)
    elif kind == "one":
        e = e[:1]
    return torch.sort(e.to(dtype)).values


def _values(edges: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    up = torch.tensor(math.inf, dtype=edges.dtype)
    special = torch.tensor([math.inf, -math.inf, math.nan], dtype=edges.dtype)
    return torch.cat(
        [
            torch.randn(3000, generator=gen, dtype=torch.float64).to(edges.dtype) * 5,
            edges,  # exactly on every edge
            edges.nextafter(up),  # one ulp either side
            edges.nextafter(-up),
            special,
        ]
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["random", "ties", "near-ties", "all-equal", "one"])
@pytest.mark.parametrize("max_per_cell", [1, 3, 100])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_torch_searchsorted(dtype, kind, max_per_cell, seed) -> None:
    edges = _edges(seed, kind, dtype)
    values = _values(edges, seed + 100)
    expected = torch.searchsorted(edges, values, side="right", out_int32=True)
    got = searchsorted_right(edges, values, max_per_cell=max_per_cell)
    assert got.dtype == torch.int32
    assert torch.equal(got, expected)


def test_no_edges_and_no_values() -> None:
    values = torch.randn(10)
    assert searchsorted_right(torch.zeros(0), values).tolist() == [0] * 10
    assert searchsorted_right(torch.tensor([0.0, 1.0]), torch.zeros(0)).numel() == 0


def test_hand_case() -> None:
    edges = torch.tensor([0.0, 1.0, 1.0, 3.0])
    values = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0] * 4)
    assert searchsorted_right(edges, values).tolist() == [0, 1, 1, 3, 3, 4, 4] * 4
