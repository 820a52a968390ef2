"""aLRP Loss: the sorted path against Algorithm A.2, hand-computed values, gradients, edge cases."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alrp_lab.losses import ALRPLoss, alrp_loss
from alrp_lab.losses.alrp import alrp_definition
from alrp_lab.losses.ranking import error_driven, pairwise_error_driven, split_ranking_inputs
from alrp_lab.testing.reference import alrp_loss_reference, make_ranking_batch

TOL = {"rtol": 1e-9, "atol": 1e-9}


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _run(logits: torch.Tensor, labels: torch.Tensor, loc_errors: torch.Tensor, delta: float = 1.0):
    """alrp_loss on fresh leaves; returns (cls, loc, dcls/dlogits, dloc/dEloc)."""
    x = logits.detach().clone().requires_grad_()
    e = loc_errors.detach().clone().requires_grad_()
    out = alrp_loss(x, labels, e, delta)
    out.cls.backward()
    out.loc.backward()
    return out.cls.detach(), out.loc.detach(), x.grad, e.grad


@pytest.mark.parametrize("delta", [1.0, 0.4, 0.0])
@pytest.mark.parametrize("seed", [1001, 1002, 1003])
def test_matches_algorithm_a2(delta: float, seed: int) -> None:
    batch = make_ranking_batch(900, 45, 150, seed=seed)
    cls, loc, grad_logits, grad_loc = _run(*batch, delta)
    ref = alrp_loss_reference(*batch, delta)
    torch.testing.assert_close(cls, ref.cls, **TOL)
    torch.testing.assert_close(loc, ref.loc, **TOL)
    torch.testing.assert_close(grad_logits, ref.grad_logits, **TOL)
    torch.testing.assert_close(grad_loc, ref.grad_loc, **TOL)
    assert grad_logits[batch.labels == -1].abs().max() == 0


@pytest.mark.parametrize("seed", [1011, 1012])
def test_matches_algorithm_a2_with_ties(seed: int) -> None:
    # A coarse grid makes many exact ties between and across positives and negatives.
    logits, labels, loc_errors = make_ranking_batch(300, 40, 30, seed=seed)
    logits = (logits * 2).round() / 2
    cls, loc, grad_logits, grad_loc = _run(logits, labels, loc_errors)
    ref = alrp_loss_reference(logits, labels, loc_errors)
    torch.testing.assert_close((cls, loc), (ref.cls, ref.loc), **TOL)
    torch.testing.assert_close((grad_logits, grad_loc), (ref.grad_logits, ref.grad_loc), **TOL)


def test_hand_computed_case() -> None:
    # Positives at 0 and 1 with Eloc 0.2 and 0.4, one negative at 0.5, delta 1 (H = x/2 + 1/2):
    # FP = (0.75, 0.25), rank = (2 + 0.75, 1 + 0.25) = (2.75, 1.25), cum = (0.6, 0.4).
    logits = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1])
    cls, loc, grad_logits, grad_loc = _run(logits, labels, _f64([0.2, 0.4]))
    assert cls.item() == pytest.approx((0.75 / 2.75 + 0.25 / 1.25) / 2, abs=1e-15)
    assert loc.item() == pytest.approx((0.6 / 2.75 + 0.4 / 1.25) / 2, abs=1e-15)
    # Positive at 0 sees the other positive fully above it: -(0.75 + 0.4 * 1) / 2.75 / 2.
    expected = [-(0.75 + 0.4) / 2.75 / 2, (1.15 / 2.75 + 0.25 / 1.25) / 2, -0.25 / 1.25 / 2]
    torch.testing.assert_close(grad_logits, _f64(expected), rtol=0, atol=1e-15)
    # Eloc weights (Eq. A.46, unit step): the top positive counts in both LRP errors.
    expected_loc = [1 / 2.75 / 2, (1 / 2.75 + 1 / 1.25) / 2]
    torch.testing.assert_close(grad_loc, _f64(expected_loc), rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", [1021, 1022, 1023])
def test_theorem2_balance(seed: int) -> None:
    batch = make_ranking_batch(2000, 80, 100, seed=seed)
    _, _, grad, _ = _run(*batch)
    pos_total = grad[batch.labels == 1].abs().sum()
    neg_total = grad[batch.labels == 0].abs().sum()
    assert pos_total > 0
    torch.testing.assert_close(pos_total, neg_total, rtol=1e-12, atol=0)
    # Error-driven signs: positives pushed up, negatives down.
    assert (grad[batch.labels == 1] <= 0).all() and (grad[batch.labels == 0] >= 0).all()


@pytest.mark.parametrize("seed", [1031, 1032])
def test_generic_framework_path_equals_closed_form(seed: int) -> None:
    batch = make_ranking_batch(500, 30, 50, seed=seed)
    _, _, grad, _ = _run(*batch)
    inputs = split_ranking_inputs(batch.logits, batch.labels)
    generic = pairwise_error_driven(
        inputs.pos_scores, inputs.neg_scores, alrp_definition(batch.loc_errors), chunk_elements=999
    )
    torch.testing.assert_close(generic.grad_pos, grad[inputs.pos_index], **TOL)
    torch.testing.assert_close(generic.grad_neg, grad[inputs.neg_index], **TOL)


def test_localisation_gradcheck() -> None:
    logits, labels, loc_errors = make_ranking_batch(60, 12, 10, seed=1041)
    logits[:5] = logits[5]  # ties among examples, some of them positives

    def loc(e: torch.Tensor) -> torch.Tensor:
        return alrp_loss(logits, labels, e).loc

    assert torch.autograd.gradcheck(loc, (loc_errors.clone().requires_grad_(),))


def test_each_part_sends_gradient_only_where_it_should() -> None:
    logits, labels, loc_errors = make_ranking_batch(100, 10, seed=1051)
    x, e = logits.clone().requires_grad_(), loc_errors.clone().requires_grad_()
    alrp_loss(x, labels, e).cls.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and e.grad is None
    x, e = logits.clone().requires_grad_(), loc_errors.clone().requires_grad_()
    out = alrp_loss(x, labels, e)
    assert out.loc.grad_fn is not None
    out.loc.backward()
    assert x.grad is None and e.grad is not None and (e.grad > 0).all()


def test_module_matches_function_and_scales_with_grad_output() -> None:
    batch = make_ranking_batch(200, 20, seed=1061)
    module = ALRPLoss(delta=0.5)
    assert "delta=0.5" in repr(module)
    x = batch.logits.clone().requires_grad_()
    out = module(x, batch.labels, batch.loc_errors)
    ref = alrp_loss_reference(*batch, 0.5)
    torch.testing.assert_close((out.cls, out.loc), (ref.cls, ref.loc), **TOL)
    (2.5 * out.cls).backward()
    torch.testing.assert_close(x.grad, 2.5 * ref.grad_logits, **TOL)
    with pytest.raises(ValueError, match="delta"):
        ALRPLoss(delta=-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs(dtype: torch.dtype) -> None:
    logits, labels, loc_errors = make_ranking_batch(300, 20, 20, seed=1071)
    logits = logits.to(dtype).double()  # the same scores at every precision
    ref = alrp_loss_reference(logits, labels, loc_errors)
    x = logits.to(dtype).requires_grad_()
    out = alrp_loss(x, labels, loc_errors.to(dtype))
    out.cls.backward()
    assert out.cls.dtype == torch.float32 and x.grad.dtype == dtype
    torch.testing.assert_close(out.cls.double(), ref.cls, rtol=1e-5, atol=1e-6)
    # The positives' gradient is computed in float64, the negatives' as a bin's value plus
    # slope times offset in float32 (three roundings), then rounded to the input dtype.
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(x.grad, ref.grad_logits.to(dtype), rtol=2 * ulp, atol=1e-30)


# ----------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [torch.zeros(6, dtype=torch.long), torch.full((6,), -1), torch.tensor([0, -1, 0, 0, -1, 0])],
    ids=["only-negatives", "all-ignored", "negatives-and-ignored"],
)
def test_no_positives_gives_zero_loss_and_gradients(labels: torch.Tensor) -> None:
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    e = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    out = alrp_loss(x, labels, e)
    assert out.cls.item() == 0 and out.loc.item() == 0
    (out.cls + out.loc).backward()  # still on the graph
    assert x.grad.tolist() == [0.0] * 6 and e.grad.numel() == 0


def test_empty_tensors() -> None:
    x = torch.zeros(0, requires_grad=True)
    out = alrp_loss(x, torch.zeros(0, dtype=torch.long), torch.zeros(0, requires_grad=True))
    (out.cls + out.loc).backward()
    assert out.cls.item() == 0 and out.loc.item() == 0 and x.grad.shape == (0,)


def test_no_negatives() -> None:
    logits = torch.tensor([3.0, 1.0, 2.5, 0.0], dtype=torch.float64)
    labels = torch.tensor([1, 1, -1, 1])
    cls, loc, grad, grad_loc = _run(logits, labels, _f64([0.5, 0.25, 1.0]))
    assert cls.item() == 0 and grad.abs().sum() == 0  # nothing to push down, FP = 0
    ref = alrp_loss_reference(logits, labels, _f64([0.5, 0.25, 1.0]))
    torch.testing.assert_close((loc, grad_loc), (ref.loc, ref.grad_loc), **TOL)


def test_one_positive() -> None:
    # One positive at 0 among negatives at -3, -0.5, 0.5, 2 (delta 1): FP = 0.25 + 0.75 + 1.
    logits = torch.tensor([-3.0, 0.0, -0.5, 0.5, 2.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 0])
    cls, loc, grad, grad_loc = _run(logits, labels, _f64([0.3]))
    assert cls.item() == pytest.approx(2 / 3, abs=1e-15)
    assert loc.item() == pytest.approx(0.3 / 3, abs=1e-15)
    expected = [0.0, -2 / 3, 0.25 / 3, 0.75 / 3, 1 / 3]
    torch.testing.assert_close(grad, _f64(expected), rtol=0, atol=1e-15)
    assert grad_loc.item() == pytest.approx(1 / 3, abs=1e-15)


def test_huge_logits() -> None:
    logits, labels, loc_errors = make_ranking_batch(400, 20, 20, seed=1081)
    logits = 1e4 + logits  # differences stay O(1): centring must keep them exact
    cls, loc, grad, grad_loc = _run(logits, labels, loc_errors)
    ref = alrp_loss_reference(logits, labels, loc_errors)
    torch.testing.assert_close((cls, loc), (ref.cls, ref.loc), **TOL)
    torch.testing.assert_close((grad, grad_loc), (ref.grad_logits, ref.grad_loc), **TOL)
    # Scores 1e4 apart saturate every step, in float32 too. Positives at 1e4 and -1e4 with
    # Eloc 0.1 and 0.2; negatives at 0 and 2e4: FP = (1, 2), rank = (2, 4).
    x = torch.tensor([1e4, 0.0, 2e4, -1e4], requires_grad=True)
    out = alrp_loss(x, torch.tensor([1, 0, 0, 1]), torch.tensor([0.1, 0.2]))
    out.cls.backward()
    assert out.cls.item() == pytest.approx((1 / 2 + 2 / 4) / 2)
    # The bottom positive also carries the top one's Eloc: -(2 + 0.1) / 4 / 2.
    top, bottom = -1 / 2 / 2, -(2 + 0.1) / 4 / 2
    expected = [top, -bottom / 2, -top - bottom / 2, bottom]
    assert x.grad.tolist() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    ("loc_errors", "match"),
    [
        (torch.zeros(3), r"shape \(P,\) = \(2,\)"),
        (torch.zeros(2, 1), r"shape \(P,\) = \(2,\)"),
        (torch.zeros(2, dtype=torch.long), "floating-point"),
        ([0.1, 0.2], "torch tensor"),
    ],
)
def test_bad_loc_errors(loc_errors, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        alrp_loss(torch.zeros(4), torch.tensor([1, 0, 1, -1]), loc_errors)


def test_bad_labels_and_delta() -> None:
    with pytest.raises(ValueError, match="labels may only hold"):
        alrp_loss(torch.zeros(3), torch.tensor([1, 3, 0]), torch.zeros(1))
    with pytest.raises(ValueError, match="delta"):
        alrp_loss(torch.zeros(3), torch.tensor([1, 0, 0]), torch.zeros(1), delta=-0.1)


def test_zero_target_ablation_adds_each_positives_own_error() -> None:
    """Appendix G.3: with target 0 a positive's update also carries its own Eloc / rank."""
    gen = torch.Generator().manual_seed(20201)
    logits = torch.randn(300, dtype=torch.float64, generator=gen)
    labels = (torch.rand(300, generator=gen) < 0.1).long()
    loc_errors = torch.rand(int(labels.sum()), dtype=torch.float64, generator=gen) + 0.1
    grads = []
    for zero_target in (False, True):
        x = logits.clone().requires_grad_(True)
        alrp_loss(x, labels, loc_errors, zero_target=zero_target).cls.backward()
        grads.append(x.grad)
    normal, zero = grads
    pos = labels == 1
    assert torch.all(zero[pos].abs() > normal[pos].abs())
    # Every positive here has a negative above it (or on its ramp): what a positive gets
    # goes to the negatives, so the totals stay equal (Theorem 2).
    assert zero[pos].abs().sum().item() == pytest.approx(zero[~pos].abs().sum().item(), rel=1e-12)


@pytest.mark.parametrize("delta", [1.0, 0.0])
def test_zero_target_keeps_updating_positives_no_negative_outranks(delta) -> None:
    """Appendix G.3's divergence: once a positive is ranked above every negative, the wrong
    target still gives it an update, l(i) / Z with l(i) = (Eloc(i) + cum) / rank(i), that no
    negative balances, so the positives' total exceeds the negatives' (Theorem 2 broken).
    With Eq. 12's target that positive gets nothing and the totals stay equal."""
    gen = torch.Generator().manual_seed(20212)
    logits = torch.randn(200, dtype=torch.float64, generator=gen)
    labels = (torch.rand(200, generator=gen) < 0.1).long()
    labels[:3] = 1
    logits[:3] = torch.tensor([9.0, 8.0, 7.5], dtype=torch.float64)  # above every negative + delta
    num_pos = int(labels.sum())
    loc_errors = torch.rand(num_pos, dtype=torch.float64, generator=gen) + 0.1
    pos = labels == 1
    grads = {}
    for zero_target in (False, True):
        x = logits.clone().requires_grad_(True)
        alrp_loss(x, labels, loc_errors, delta=delta, zero_target=zero_target).cls.backward()
        grads[zero_target] = x.grad
    # Plain reference for the three ranked positives (positives in index order, as the
    # loss takes loc_errors): l(i) = (Eloc(i) + sum of Eloc(k) H(s_k - s_i), k != i) / rank(i).
    s_pos, e = logits[pos], loc_errors
    for i in range(3):
        above = [k for k in range(num_pos) if k != i and s_pos[k] - s_pos[i] > delta]
        ramp = [k for k in range(num_pos) if k != i and abs(s_pos[k] - s_pos[i]) <= delta]

        def h(k, i=i):
            x = (s_pos[k] - s_pos[i]).item()
            return 1.0 if x > delta else (x / (2 * delta) + 0.5 if delta > 0 else 0.0)

        rank = 1 + sum(h(k) for k in above + ramp)
        cum = e[i] + sum(e[k] * h(k) for k in above + ramp)
        assert grads[True][i].item() == pytest.approx(-(cum / rank).item() / num_pos, rel=1e-12)
        assert grads[False][i].item() == 0.0
    ratio = grads[True][pos].abs().sum() / grads[True][~pos].abs().sum()
    assert ratio.item() > 1.0 + 1e-6
    assert grads[False][pos].abs().sum().item() == pytest.approx(
        grads[False][~pos].abs().sum().item(), rel=1e-12
    )
    # Only the ranked positives' updates differ from Algorithm 1 with the same wrong target,
    # and the pairwise path agrees with the sorted one.
    definition = alrp_definition(loc_errors, zero_target=True)
    neg = logits[~pos]
    with_ranked = error_driven(s_pos, neg, definition, delta)
    gated = error_driven(s_pos, neg, dataclasses.replace(definition, update_ranked=False), delta)
    assert torch.equal(with_ranked.grad_neg, gated.grad_neg)
    assert torch.equal(with_ranked.grad_pos[3:], gated.grad_pos[3:])
    assert torch.all(with_ranked.grad_pos[:3] < 0) and torch.all(gated.grad_pos[:3] == 0)
    pairwise = pairwise_error_driven(s_pos, neg, definition, delta)
    torch.testing.assert_close(pairwise.grad_pos, with_ranked.grad_pos, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(pairwise.grad_neg, with_ranked.grad_neg, rtol=1e-12, atol=1e-15)
