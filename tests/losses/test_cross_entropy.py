import math

import pytest
import torch
import torch.nn.functional as F

from alrp_lab.losses.cross_entropy import CrossEntropyLoss, sigmoid_cross_entropy


def _random_case(seed: int, m: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(-1, 2, (m,), generator=gen)
    return logits, labels


def _naive_ce(logits, labels):
    out = []
    for x, y in zip(logits.tolist(), labels.tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-x))
        out.append(-math.log(p) if y == 1 else -math.log(1 - p) if y == 0 else 0.0)
    return torch.tensor(out, dtype=torch.float64)


def test_hand_computed_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0])
    loss = sigmoid_cross_entropy(logits, labels, reduction="none")
    # p = 0.5, 0.5, 0.75: -log 0.5, -log 0.5, -log 0.25.
    expected = torch.tensor([math.log(2), math.log(2), math.log(4)], dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_matches_naive_formula_and_torch(seed):
    logits, labels = _random_case(seed)
    expected = _naive_ce(logits, labels)
    torch.testing.assert_close(
        sigmoid_cross_entropy(logits, labels, "none"), expected, rtol=1e-10, atol=1e-14
    )
    keep = labels >= 0
    reference = F.binary_cross_entropy_with_logits(
        logits[keep], labels[keep].double(), reduction="sum"
    )
    torch.testing.assert_close(sigmoid_cross_entropy(logits, labels), reference)
    torch.testing.assert_close(
        sigmoid_cross_entropy(logits, labels, "mean"), reference / keep.sum(), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("seed", [111, 112])
def test_gradient_is_probability_minus_label(seed):
    logits, labels = _random_case(seed)
    logits.requires_grad_(True)
    sigmoid_cross_entropy(logits, labels).backward()
    p = torch.sigmoid(logits.detach())
    expected = torch.where(labels >= 0, p - labels.clamp(min=0).double(), torch.zeros_like(p))
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-14)


def test_normalizers():
    logits, labels = _random_case(121)
    total = _naive_ce(logits, labels).sum()
    by_pos = CrossEntropyLoss("positives")(logits, labels)
    torch.testing.assert_close(by_pos, total / (labels == 1).sum(), rtol=1e-10, atol=0)
    by_mean = CrossEntropyLoss("mean")(logits, labels)
    torch.testing.assert_close(by_mean, total / (labels >= 0).sum(), rtol=1e-10, atol=0)


def test_no_positives_and_empty_inputs_stay_finite():
    labels = torch.tensor([0, -1])
    logits = torch.tensor([math.log(3.0), 5.0], dtype=torch.float64)
    expected = torch.tensor(math.log(4.0), dtype=torch.float64)
    torch.testing.assert_close(CrossEntropyLoss()(logits, labels), expected)
    empty = torch.zeros(0, requires_grad=True)
    for normalizer in ("positives", "mean"):
        loss = CrossEntropyLoss(normalizer)(empty, torch.zeros(0, dtype=torch.long))
        loss.backward()
        assert loss.item() == 0.0


def test_huge_and_infinite_logits():
    logits = torch.tensor([1e4, -1e4, math.inf, -math.inf], requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    loss = sigmoid_cross_entropy(logits, labels, "none")
    loss.sum().backward()
    assert torch.equal(loss, torch.tensor([1e4, 1e4, 0.0, 0.0]))
    assert torch.equal(logits.grad, torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_ignored_entries_contribute_nothing():
    logits = torch.tensor([0.3, math.nan, -math.inf, 1.2], requires_grad=True)
    labels = torch.tensor([1, -1, -1, 0])
    loss = sigmoid_cross_entropy(logits, labels)
    loss.backward()
    torch.testing.assert_close(loss, sigmoid_cross_entropy(logits[[0, 3]].detach(), labels[[0, 3]]))
    assert logits.grad[1].item() == 0.0 and logits.grad[2].item() == 0.0


def test_bad_input_raises_a_clear_error():
    with pytest.raises(ValueError, match="normalizer"):
        CrossEntropyLoss("batch")
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_cross_entropy(torch.zeros(2), torch.zeros(2, dtype=torch.long), "avg")
    with pytest.raises(ValueError, match="floating-point"):
        sigmoid_cross_entropy(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[-2\]"):
        sigmoid_cross_entropy(torch.zeros(2), torch.tensor([-2, 1]))
