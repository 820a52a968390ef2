import math

import pytest
import torch

from alrp_lab.losses.cross_entropy import sigmoid_cross_entropy
from alrp_lab.losses.focal import FocalLoss, sigmoid_focal_loss


def _random_case(seed: int, m: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(-1, 2, (m,), generator=gen)
    return logits, labels


def _naive_focal(logits, labels, alpha, gamma):
    """Textbook formula on probabilities, one example at a time."""
    out = []
    for x, y in zip(logits.tolist(), labels.tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-x))
        if y == 1:
            out.append(-alpha * (1 - p) ** gamma * math.log(p))
        elif y == 0:
            out.append(-(1 - alpha) * p**gamma * math.log(1 - p))
        else:
            out.append(0.0)
    return torch.tensor(out, dtype=torch.float64)


def _closed_form_grad(logits, labels, alpha, gamma):
    """d loss / d logit derived by hand for each label."""
    p = torch.sigmoid(logits)
    pos = alpha * (1 - p) ** gamma * (gamma * p * torch.log(p) + p - 1)
    neg = (1 - alpha) * p**gamma * (p - gamma * (1 - p) * torch.log(1 - p))
    return torch.where(labels == 1, pos, torch.where(labels == 0, neg, torch.zeros_like(p)))


def test_hand_computed_at_zero_logit():
    logits = torch.zeros(2, dtype=torch.float64)
    labels = torch.tensor([1, 0])
    loss = sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0, reduction="none")
    # p = 0.5: alpha * 0.5^2 * log 2 and (1 - alpha) * 0.5^2 * log 2.
    expected = torch.tensor([0.25 * 0.25, 0.75 * 0.25], dtype=torch.float64) * math.log(2)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("seed", "alpha", "gamma"), [(11, 0.25, 2.0), (12, 0.4, 1.5), (13, 0.5, 0.0), (14, 0.9, 0.5)]
)
def test_matches_naive_formula_and_reductions(seed, alpha, gamma):
    logits, labels = _random_case(seed)
    expected = _naive_focal(logits, labels, alpha, gamma)
    none = sigmoid_focal_loss(logits, labels, alpha, gamma, reduction="none")
    torch.testing.assert_close(none, expected, rtol=1e-10, atol=1e-14)
    total = sigmoid_focal_loss(logits, labels, alpha, gamma, reduction="sum")
    torch.testing.assert_close(total, expected.sum(), rtol=1e-10, atol=0)
    mean = sigmoid_focal_loss(logits, labels, alpha, gamma, reduction="mean")
    torch.testing.assert_close(mean, expected.sum() / (labels >= 0).sum(), rtol=1e-10, atol=0)


@pytest.mark.parametrize(("seed", "gamma"), [(21, 2.0), (22, 1.0), (23, 0.0)])
def test_gradient_matches_closed_form(seed, gamma):
    logits, labels = _random_case(seed, m=100)
    logits.requires_grad_(True)
    sigmoid_focal_loss(logits, labels, alpha=0.3, gamma=gamma).backward()
    expected = _closed_form_grad(logits.detach(), labels, 0.3, gamma)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-9, atol=1e-14)


def test_gamma_zero_is_balanced_cross_entropy():
    logits, labels = _random_case(31)
    focal = sigmoid_focal_loss(logits, labels, alpha=0.5, gamma=0.0, reduction="none")
    torch.testing.assert_close(focal, 0.5 * sigmoid_cross_entropy(logits, labels, "none"))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_huge_logits_give_finite_values_and_gradients(gamma):
    logits = torch.tensor([1e4, -1e4, 1e4, -1e4, 80.0, -80.0], requires_grad=True)
    labels = torch.tensor([1, 0, 0, 1, 0, 1])
    loss = sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=gamma, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # Confident and right: no loss; confident and wrong: loss ~ weight * |logit|.
    torch.testing.assert_close(loss[:2], torch.zeros(2))
    torch.testing.assert_close(loss[2:4], torch.tensor([0.75e4, 0.25e4]))
    torch.testing.assert_close(logits.grad[2:4], torch.tensor([0.75, -0.25]))


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_infinite_logit_with_the_right_label_costs_nothing(gamma):
    logits = torch.tensor([math.inf, -math.inf], requires_grad=True)
    labels = torch.tensor([1, 0])
    loss = sigmoid_focal_loss(logits, labels, gamma=gamma)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros(2))


def test_ignored_entries_contribute_nothing():
    logits, labels = _random_case(41, m=50)
    keep = labels >= 0
    # Garbage in ignored slots must not leak into the value or the gradient.
    noisy = logits.clone()
    garbage = torch.tensor([math.inf, -math.inf, math.nan], dtype=torch.float64).repeat(50)
    noisy[~keep] = garbage[: int((~keep).sum())]
    noisy.requires_grad_(True)
    loss = sigmoid_focal_loss(noisy, labels)
    loss.backward()
    torch.testing.assert_close(loss, sigmoid_focal_loss(logits[keep], labels[keep]))
    assert torch.equal(noisy.grad[~keep], torch.zeros(int((~keep).sum()), dtype=torch.float64))
    per_example = sigmoid_focal_loss(noisy.detach(), labels, reduction="none")
    assert torch.equal(per_example[~keep], torch.zeros_like(per_example[~keep]))


def test_module_divides_by_number_of_positives():
    logits, labels = _random_case(51)
    expected = _naive_focal(logits, labels, 0.25, 2.0).sum() / (labels == 1).sum()
    torch.testing.assert_close(FocalLoss()(logits, labels), expected, rtol=1e-10, atol=0)


def test_module_without_positives_divides_by_one():
    logits = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, -1])
    expected = _naive_focal(logits, labels, 0.4, 1.5).sum()
    torch.testing.assert_close(FocalLoss(alpha=0.4, gamma=1.5)(logits, labels), expected)


def test_empty_input_gives_zero_with_a_gradient():
    logits = torch.zeros(0, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    loss = FocalLoss()(logits, labels)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0,)
    assert sigmoid_focal_loss(logits, labels, reduction="mean").item() == 0.0


@pytest.mark.parametrize(
    ("logits", "labels", "kwargs", "match"),
    [
        (torch.zeros(3), torch.zeros(4, dtype=torch.long), {}, "same shape"),
        (torch.zeros(3), torch.zeros(3), {}, "integer"),
        (torch.zeros(3), torch.tensor([0, 2, 1]), {}, r"\[2\]"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), {"reduction": "avg"}, "reduction"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), {"alpha": 1.5}, "alpha"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), {"gamma": -1.0}, "gamma"),
    ],
)
def test_bad_input_raises_a_clear_error(logits, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss(logits, labels, **kwargs)


def test_module_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=math.nan)
    assert "alpha=0.4, gamma=1.5" in repr(FocalLoss(alpha=0.4, gamma=1.5))
