from __future__ import annotations

import math

import torch

from alrp_lab.engine.finite import all_finite, gradient_norm, state_is_finite


def test_all_finite_finds_one_bad_element():
    good = [torch.randn(3, dtype=torch.float64), torch.ones(2, 2)]
    assert all_finite(good) and all_finite([])
    bad = torch.randn(5)
    bad[3] = float("inf")
    assert not all_finite([*good, bad])
    assert all_finite([torch.arange(3)]), "integer tensors cannot be non-finite"


def test_gradient_norm_is_non_finite_exactly_when_a_gradient_is():
    layer = torch.nn.Linear(3, 2)
    assert float(gradient_norm(layer.parameters())) == 0.0
    layer(torch.randn(4, 3)).sum().backward()
    norm = float(gradient_norm(layer.parameters()))
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters()))
    assert math.isclose(norm, expected, rel_tol=1e-6)
    layer.bias.grad[0] = float("nan")
    assert not torch.isfinite(gradient_norm(layer.parameters()))


def test_state_is_finite_checks_weights_and_momentum():
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    assert state_is_finite(layer, optimizer)
    next(iter(optimizer.state.values()))["momentum_buffer"][0] = float("nan")
    assert not state_is_finite(layer, optimizer)
    optimizer.state.clear()
    with torch.no_grad():
        layer.weight[0, 0] = float("inf")
    assert not state_is_finite(layer, optimizer)
