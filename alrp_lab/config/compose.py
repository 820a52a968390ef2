"""Compose ``conf/`` with overrides outside a Hydra app (sweeps, torchrun workers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alrp_lab.errors import ConfigError
from alrp_lab.resources import conf_dir

__all__ = ["compose_config"]


def compose_config(overrides: Sequence[str], *, validate: bool = True) -> Any:
    """``conf/config.yaml`` with ``overrides`` (Hydra's compose API), validated unless
    ``validate`` is false. Raises :class:`ConfigError` naming the override Hydra cannot
    apply, or the bad value."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from alrp_lab.config.schema import validate_config

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"bad override: {first}") from None
    return validate_config(cfg) if validate else cfg
