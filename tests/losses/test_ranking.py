"""The error-driven framework: sorted primitives, the two paths, inputs and the autograd hook."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.losses.alrp import alrp_definition
from alrp_lab.losses.ap import ap_definition
from alrp_lab.losses.ndcg import ndcg_definition
from alrp_lab.losses.ranking import (
    FP_EPS,
    RankingLossDefinition,
    RankingStats,
    attach_error_driven_gradient,
    bin_sources,
    binned_step_sums,
    binned_step_transpose_sums,
    check_delta,
    error_driven,
    pairwise_error_driven,
    sorted_error_driven,
    split_ranking_inputs,
    step,
    step_sums,
    step_transpose_sums,
    step_windows,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _scores(seed: int, n: int, grid: float | None = None) -> torch.Tensor:
    s = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    # Rounding to a grid makes exact ties and pairs exactly delta apart.
    return s if grid is None else (s / grid).round() * grid


# ----------------------------------------------------------------------------------------------
# The step function and the sorted primitives
# ----------------------------------------------------------------------------------------------


def test_step_hand_values() -> None:
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    assert step(x, 1.0).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert step(x, 0.5).tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    # delta = 0 is the unit step 1[x > 0]: H(0) = 0.
    assert step(x, 0.0).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("delta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("grid", [None, 0.5])
@pytest.mark.parametrize("seed", [101, 102])
def test_step_sums_match_brute_force(delta: float, grid: float | None, seed: int) -> None:
    sources = _scores(seed, 300, grid)
    targets = torch.sort(_scores(seed + 50, 40, grid)).values
    w_src = torch.rand(300, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w_tgt = torch.randn(40, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    h = step(sources[None, :] - targets[:, None], delta)  # (T, S)

    windows = step_windows(sources, targets, delta)
    torch.testing.assert_close(step_sums(windows, delta), h.sum(1), **TIGHT)
    torch.testing.assert_close(step_sums(windows, delta, w_src), h @ w_src, **TIGHT)
    torch.testing.assert_close(step_transpose_sums(windows, delta, w_tgt), w_tgt @ h, **TIGHT)


@pytest.mark.parametrize("delta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("grid", [None, 0.5])
@pytest.mark.parametrize("seed", [111, 112])
def test_binned_sums_match_brute_force(delta: float, grid: float | None, seed: int) -> None:
    # Enough sources that the grid search runs (not its binary-search fallback).
    sources = _scores(seed, 3000, grid)
    targets = torch.sort(_scores(seed + 50, 40, grid)).values
    w_tgt = torch.randn(40, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    h = step(sources[None, :] - targets[:, None], delta)  # (T, S)
    binned = bin_sources(sources, targets, delta)
    torch.testing.assert_close(binned_step_sums(binned, delta), h.sum(1), **TIGHT)
    torch.testing.assert_close(binned_step_transpose_sums(binned, delta, w_tgt), w_tgt @ h, **TIGHT)


@pytest.mark.parametrize("shift", [0.0, 1e4])
def test_binned_sums_of_float32_sources(shift: float) -> None:
    # float32 sources are searched and offset in float32, summed in float64: the sums agree
    # with float64 arithmetic on the same (rounded) scores to float32 precision, also where
    # the scores are large and only their differences are O(1).
    sources = (_scores(121, 5000) + shift).float()
    targets = torch.sort(_scores(122, 60) + 1 + shift).values.float().double()
    w_tgt = torch.rand(60, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    h = step(sources.double()[None, :] - targets[:, None], 1.0)
    binned = bin_sources(sources, targets, 1.0)
    torch.testing.assert_close(binned_step_sums(binned, 1.0), h.sum(1), rtol=1e-6, atol=1e-6)
    out = binned_step_transpose_sums(binned, 1.0, w_tgt)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), w_tgt @ h, rtol=1e-6, atol=1e-6)


def test_step_sums_hand_case() -> None:
    # Targets 0 and 1, sources -1, 0.5, 3 with delta 1: H(v - t) by hand.
    targets = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sources = torch.tensor([-1.0, 0.5, 3.0], dtype=torch.float64)
    windows = step_windows(sources, targets, 1.0)
    # Target 0: H(-1) + H(0.5) + H(3) = 0 + 0.75 + 1; target 1: H(-2) + H(-0.5) + H(2).
    assert step_sums(windows, 1.0).tolist() == [1.75, 1.25]
    # Source 0.5 with target weights (2, 10): 2 * 0.75 + 10 * 0.25.
    assert step_transpose_sums(windows, 1.0, torch.tensor([2.0, 10.0]))[1].item() == 4.0


def test_step_sums_empty_inputs() -> None:
    empty = torch.zeros(0, dtype=torch.float64)
    some = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert step_sums(step_windows(empty, some, 1.0), 1.0).tolist() == [0.0, 0.0]
    assert step_sums(step_windows(some, empty, 1.0), 1.0).numel() == 0
    assert step_transpose_sums(step_windows(some, empty, 1.0), 1.0, empty).tolist() == [0.0, 0.0]


def test_step_sums_keep_precision_far_from_zero() -> None:
    # Scores near 1e4 with float64 sums: centring keeps the ramp sums exact to ~1e-12.
    sources = 1e4 + _scores(7, 2000) * 0.5
    targets = torch.sort(1e4 + _scores(8, 50) * 0.5).values
    h = step(sources[None, :] - targets[:, None], 1.0)
    windows = step_windows(sources, targets, 1.0)
    torch.testing.assert_close(step_sums(windows, 1.0), h.sum(1), rtol=1e-12, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# The framework: sorted path == pairwise path; a custom pmf; Eq. 5 and Theorem 2
# ----------------------------------------------------------------------------------------------


def _definitions(num_pos: int, seed: int) -> dict[str, RankingLossDefinition]:
    e = torch.rand(num_pos, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {"ap": ap_definition(), "alrp": alrp_definition(e), "ndcg": ndcg_definition()}


@pytest.mark.parametrize("name", ["ap", "alrp", "ndcg"])
@pytest.mark.parametrize("delta", [1.0, 0.0])
@pytest.mark.parametrize("seed", [201, 202])
def test_sorted_path_equals_pairwise_path(name: str, delta: float, seed: int) -> None:
    pos, neg = _scores(seed, 37, 0.25) + 1, _scores(seed + 1, 400, 0.25)
    definition = _definitions(pos.numel(), seed)[name]
    fast = sorted_error_driven(pos, neg, definition, delta)
    # A small chunk bound makes the pairwise path run over several chunks.
    slow = pairwise_error_driven(pos, neg, definition, delta, chunk_elements=3000)
    torch.testing.assert_close(fast.loss, slow.loss, **TIGHT)
    torch.testing.assert_close(fast.grad_pos, slow.grad_pos, **TIGHT)
    torch.testing.assert_close(fast.grad_neg, slow.grad_neg, **TIGHT)
    torch.testing.assert_close(fast.stats.fp, slow.stats.fp, **TIGHT)
    torch.testing.assert_close(fast.stats.rank, slow.stats.rank, **TIGHT)


def test_pairwise_chunking_does_not_change_the_result() -> None:
    pos, neg = _scores(301, 20), _scores(302, 100)
    one_row = pairwise_error_driven(pos, neg, ap_definition(), chunk_elements=1)
    all_rows = pairwise_error_driven(pos, neg, ap_definition(), chunk_elements=10**6)
    torch.testing.assert_close(one_row.grad_neg, all_rows.grad_neg, **TIGHT)
    torch.testing.assert_close(one_row.grad_pos, all_rows.grad_pos, **TIGHT)


def _skewed_pmf(x, h, stats, rows):
    # Harder negatives (larger x_ij) take more of the error: p(j|i) ~ H(x_ij) (1 + x_ij^2).
    weights = h * (1 + x**2)
    return weights / weights.sum(1, keepdim=True).clamp(min=1e-300)


def test_custom_pmf_follows_eq5_and_theorem2() -> None:
    pos, neg = _scores(401, 15) + 1, _scores(402, 60)
    ap = ap_definition()
    custom = RankingLossDefinition(ap.error, ap.target, ap.normalizer, pmf=_skewed_pmf)
    result = error_driven(pos, neg, custom)  # a pmf selects the pairwise path

    # Algorithm 1 written out on the full (P, N) matrix.
    x = neg[None, :] - pos[:, None]
    h = step(x, 1.0)
    fp = h.sum(1)
    rank = 1 + step(pos[None, :] - pos[:, None], 1.0).sum(1) - 0.5 + fp
    dx = -(fp / rank)[:, None] * _skewed_pmf(x, h, None, None) * (fp > FP_EPS)[:, None]
    num_pos = pos.numel()
    torch.testing.assert_close(result.grad_pos, dx.sum(1) / num_pos, **TIGHT)
    torch.testing.assert_close(result.grad_neg, -dx.sum(0) / num_pos, **TIGHT)
    torch.testing.assert_close(result.grad_pos.abs().sum(), result.grad_neg.abs().sum(), **TIGHT)
    # The skew changes the negatives' share but not the positives'.
    uniform = error_driven(pos, neg, ap)
    torch.testing.assert_close(result.grad_pos, uniform.grad_pos, **TIGHT)
    assert not torch.allclose(result.grad_neg, uniform.grad_neg)


def test_sorted_path_rejects_a_custom_pmf() -> None:
    ap = ap_definition()
    custom = RankingLossDefinition(ap.error, ap.target, ap.normalizer, pmf=_skewed_pmf)
    with pytest.raises(ValueError, match="pairwise_error_driven"):
        sorted_error_driven(_scores(1, 3), _scores(2, 3), custom)


def test_stats_come_back_in_the_given_order() -> None:
    pos = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    stats = sorted_error_driven(pos, pos.new_zeros(0), ap_definition(), 0.0).stats
    # Unit step, no negatives: rank = 1 + number of positives strictly above.
    assert stats.rank.tolist() == [1.0, 3.0, 2.0]
    assert isinstance(stats, RankingStats) and stats.num_positives == 3


# ----------------------------------------------------------------------------------------------
# Inputs, delta and the autograd hook
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "1-D"),
        (torch.zeros(4), torch.zeros(3, dtype=torch.long), "same length"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), "floating-point"),
        (torch.zeros(3), torch.zeros(3), r"\.long\(\)"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.bool), r"\.long\(\)"),
        (torch.zeros(3), torch.tensor([0, 1, 2]), r"found \[2\]"),
        (torch.zeros(3), torch.tensor([0, -2, 1]), r"found \[-2\]"),
        ([0.0, 1.0], torch.tensor([0, 1]), "torch tensors"),
    ],
)
def test_split_rejects_bad_inputs(logits, labels, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_ranking_inputs(logits, labels)


def test_split_keeps_order_and_computes_half_in_float32() -> None:
    logits = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.0], dtype=torch.float16)
    inputs = split_ranking_inputs(logits, torch.tensor([1, 0, -1, 1, 0]))
    assert inputs.pos_index.tolist() == [0, 3] and inputs.neg_index.tolist() == [1, 4]
    assert inputs.pos_scores.dtype == torch.float32
    assert inputs.pos_scores.tolist() == [0.5, 3.0]


@pytest.mark.parametrize("delta", [-1.0, float("nan"), float("inf"), "1", True, None])
def test_check_delta_rejects_bad_values(delta) -> None:
    with pytest.raises(ValueError, match="delta"):
        check_delta(delta)


def test_attach_gradient_scales_with_grad_output() -> None:
    logits = torch.zeros(3, requires_grad=True)
    grad = torch.tensor([1.0, -2.0, 0.5])
    out = attach_error_driven_gradient(logits, torch.tensor(0.25), grad)
    assert out.item() == 0.25
    (3 * out).backward()
    assert logits.grad.tolist() == [3.0, -6.0, 1.5]


@pytest.mark.parametrize("delta", [1.0, 0.0])
def test_negatives_below_the_lowest_positive_are_dropped_exactly(delta):
    from alrp_lab.losses import alrp_loss, ap_loss
    from alrp_lab.testing.reference import alrp_loss_reference, ap_loss_reference

    gen = torch.Generator().manual_seed(5201)
    pos = torch.rand(30, generator=gen, dtype=torch.float64) * 4
    near = torch.rand(200, generator=gen, dtype=torch.float64) * 5 - 1.5
    far = -10 - torch.rand(5000, generator=gen, dtype=torch.float64)  # all below pos.min() - 1
    logits = torch.cat([near[:100], pos, far, near[100:]])
    labels = torch.cat([torch.zeros(100), torch.ones(30), torch.zeros(5000), torch.zeros(100)])
    labels = labels.long()
    inputs = split_ranking_inputs(logits, labels, delta)
    assert inputs.neg_index.numel() <= 200
    assert split_ranking_inputs(logits, labels).neg_index.numel() == 5200
    errors = torch.rand(30, generator=gen, dtype=torch.float64)
    x = logits.clone().requires_grad_()
    cls, _ = alrp_loss(x, labels, errors, delta)
    cls.backward()
    ref = alrp_loss_reference(logits, labels, errors, delta)
    torch.testing.assert_close(cls.detach(), ref.cls, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, ref.grad_logits, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(x.grad[130:5130]) == 0
    y = logits.clone().requires_grad_()
    ap_loss(y, labels, delta).backward()
    torch.testing.assert_close(y.grad, ap_loss_reference(logits, labels, delta).grad_logits)


# Calls that make the host wait for a GPU, as far as a TorchFunctionMode can see them: it sees
# Python-level torch calls only, so kernels known to read back inside C++ are listed by name
# (CUDA's bincount reads its indices' min and max; repeat_interleave its total without
# output_size). The GPU test below checks the same with torch's own sync detector.
_SYNCING = {
    torch.Tensor.item: "item",
    torch.Tensor.tolist: "tolist",
    torch.Tensor.numpy: "numpy",
    torch.Tensor.cpu: "cpu",
    torch.nonzero: "nonzero",
    torch.Tensor.nonzero: "nonzero",
    torch.argwhere: "argwhere",
    torch.Tensor.__bool__: "bool",
    torch.Tensor.__int__: "int",
    torch.Tensor.__float__: "float",
    torch.Tensor.__index__: "index",
    torch.masked_select: "masked_select",
    torch.Tensor.masked_select: "masked_select",
    torch.unique: "unique",
    torch.Tensor.unique: "unique",
    torch.unique_consecutive: "unique",
    torch.Tensor.unique_consecutive: "unique",
    torch.bincount: "bincount",
    torch.Tensor.bincount: "bincount",
    torch.histc: "histc",
    torch.equal: "equal",
    torch.allclose: "allclose",
    torch.Tensor.allclose: "allclose",
}


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class _SyncCounter(torch.overrides.TorchFunctionMode):
    """Records every torch call above, one-argument ``where``, ``repeat_interleave`` without
    ``output_size``, moves to the CPU and boolean-mask indexing."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SYNCING:
            self.calls.append(_SYNCING[func])
        elif func in (torch.where, torch.Tensor.where) and len(args) + len(kwargs) == 1:
            self.calls.append("where")
        elif func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
            if kwargs.get("output_size") is None:
                self.calls.append("repeat_interleave")
        elif func is torch.Tensor.to and any(
            str(a).startswith("cpu") for a in (*args[1:], kwargs.get("device"))
        ):
            self.calls.append("to-cpu")
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            if _has_bool_index(args[1]):
                self.calls.append("bool-index")
        elif func in (torch.Tensor.index_put_, torch.Tensor.index_put, torch.index_put):
            if _has_bool_index(args[1]):
                self.calls.append("bool-index")
        return func(*args, **kwargs)


def _ranking_loss(name: str, logits, labels, errors, delta):
    from alrp_lab.losses import alrp_loss, ap_loss
    from alrp_lab.losses.ndcg import ndcg_loss

    if name == "alrp":
        return alrp_loss(logits, labels, errors, delta)[0]
    return {"ap": ap_loss, "ndcg": ndcg_loss}[name](logits, labels, delta)


@pytest.mark.parametrize("num_pos", [7, 0])
@pytest.mark.parametrize("delta", [1.0, 0.0])
def test_one_host_sync_per_call_on_the_device_path(monkeypatch, num_pos: int, delta: float):
    """As on a GPU (static indices, the binary search), each ranking loss reads the host once
    (the split's one read of the label bounds and counts), forward and backward. The
    gradients equal the CPU path's."""
    from alrp_lab.losses import ranking

    gen = torch.Generator().manual_seed(7302)
    logits = torch.randn(5000, generator=gen, dtype=torch.float64)
    labels = torch.zeros(5000, dtype=torch.long)
    labels[torch.randperm(5000, generator=gen)[:num_pos]] = 1
    labels[:50] = -1
    errors = torch.rand(num_pos, generator=gen, dtype=torch.float64)
    names = ("alrp", "ap", "ndcg")

    cpu_path = {}
    for name in names:
        x = logits.clone().requires_grad_()
        _ranking_loss(name, x, labels, errors, delta).backward()
        cpu_path[name] = x.grad

    monkeypatch.setattr(ranking, "reads_without_sync", lambda device: True)
    monkeypatch.setattr(
        ranking,
        "searchsorted_right",
        lambda edges, values: torch.searchsorted(edges, values, side="right", out_int32=True),
    )
    for name in names:
        x = logits.clone().requires_grad_()
        with _SyncCounter() as counter:
            _ranking_loss(name, x, labels, errors, delta).backward()
        assert counter.calls == ["tolist"], name
        # index_add_ sums the bins in another order than bincount: equal to rounding.
        torch.testing.assert_close(x.grad, cpu_path[name], rtol=1e-12, atol=1e-15)


def test_the_counter_sees_syncs():
    """The counter above is not blind: the CPU path's nonzero and the grid's read show."""
    from alrp_lab.losses import alrp_loss

    gen = torch.Generator().manual_seed(7303)
    logits = torch.randn(5000, generator=gen)
    labels = (torch.rand(5000, generator=gen) < 0.01).long()
    with _SyncCounter() as counter:
        alrp_loss(logits, labels, torch.rand(int(labels.sum()), generator=gen))
    assert counter.calls.count("nonzero") == 2 and "tolist" in counter.calls
    assert "bincount" in counter.calls
    with _SyncCounter() as counter:
        torch.where(labels > 0)
        labels.repeat_interleave(2)
        logits.to("cpu")
        logits[(labels > 0,)]
    assert counter.calls == ["where", "repeat_interleave", "to-cpu", "bool-index"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("delta", [1.0, 0.0])
def test_one_host_sync_per_call_on_cuda(delta: float):
    """torch's own detector: one synchronising call per loss, forward and backward."""
    import warnings

    gen = torch.Generator().manual_seed(7306)
    logits = torch.randn(200_000, generator=gen).cuda()
    labels = (torch.rand(200_000, generator=gen) < 0.001).long().cuda()
    errors = torch.rand(int(labels.sum()), generator=gen).cuda()
    for name in ("alrp", "ap", "ndcg"):
        x = logits.clone().requires_grad_()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _ranking_loss(name, x, labels, errors, delta).backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) == 1, (name, [str(w.message) for w in syncs])


@pytest.mark.parametrize("delta", [1.0, 0.0, None])
@pytest.mark.parametrize("seed", [7304, 7305])
def test_split_with_one_read_equals_the_cpu_split(monkeypatch, delta, seed: int):
    """The GPU's split (one read, static indices) gives the CPU split's every tensor,
    with and without positives, ignored entries and the shortcut, and raises alike."""
    from alrp_lab.losses import ranking

    gen = torch.Generator().manual_seed(seed)
    cases = []
    for p_pos in (0.0, 0.01, 0.5, 1.0):
        logits = torch.randn(3000, generator=gen) * 3
        labels = (torch.rand(3000, generator=gen) < p_pos).long()
        labels[torch.rand(3000, generator=gen) < 0.1] = -1
        cases.append((logits, labels))
    cases.append((torch.zeros(0), torch.zeros(0, dtype=torch.long)))
    special = torch.tensor([float("nan"), 1.0, float("inf"), -float("inf"), 2.0, 0.5])
    for labels in ([0, 0, 0, 0, -1, 0], [0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 1]):
        cases.append((special, torch.tensor(labels)))
    expected = [split_ranking_inputs(x, y, delta) for x, y in cases]
    monkeypatch.setattr(ranking, "reads_without_sync", lambda device: True)
    for (x, y), want in zip(cases, expected, strict=True):
        got = split_ranking_inputs(x, y, delta)
        for name, a, b in zip(want._fields, got, want, strict=True):
            assert a.dtype == b.dtype, name
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    with pytest.raises(ValueError, match=r"found \[2\]"):
        split_ranking_inputs(torch.zeros(3), torch.tensor([0, 1, 2]), delta)
