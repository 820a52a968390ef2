"""Losses in float32 under mixed precision."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["float32_loss"]

F = TypeVar("F", bound=Callable[..., Any])

_HALF = (torch.float16, torch.bfloat16)


def _float32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def float32_loss(forward: F) -> F:
    """Decorate a loss module's ``forward``: under autocast it runs with autocast off and its
    half-precision tensor arguments cast to float32 (the ranking losses sort and sum over
    millions of examples). Without autocast it is the plain call."""

    @functools.wraps(forward)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        device = next((a.device for a in args if isinstance(a, Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device.type):
            return forward(self, *args, **kwargs)
        args = tuple(_float32(a) for a in args)
        kwargs = {k: _float32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device.type, enabled=False):
            return forward(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
