"""Hydra override strings (``key=value``, ``+key=value``, ``~key``): what they name."""

from __future__ import annotations

__all__ = ["override_key"]


def override_key(override: str) -> str:
    """The config key an override sets, appends or deletes: ``+train.lr=0.1`` ->
    ``train.lr``."""
    return override.split("=", 1)[0].lstrip("+~")
