"""Finite-state checks: a step with a non-finite gradient is never applied, and a checkpoint
never holds non-finite weights or optimiser state."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["all_finite", "gradient_norm", "state_is_finite"]


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every floating-point tensor is finite (one host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The total 2-norm of the parameters' gradients (0 when none has one): non-finite
    exactly when some gradient element is."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def state_is_finite(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the weights, buffers and optimiser state (momentum) are all finite."""
    tensors = [*model.parameters(), *model.buffers()]
    for state in optimizer.state.values():
        tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return all_finite(t.detach() for t in tensors)
