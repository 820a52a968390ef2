"""Compose ``conf/`` with overrides outside a Hydra app (sweeps, torchrun workers)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from alrp_lab.errors import ConfigError
from alrp_lab.resources import conf_dir
from alrp_lab.utils.overrides import override_key

__all__ = ["compose_config", "unknown_key_error"]


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
            try:
                cfg = compose("config", overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as err:
                # Here, inside the config dir: the message composes the config without it.
                message = unknown_key_error(err, list(overrides))
                if message is None:
                    raise
                raise ConfigError(message) from None
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"bad override: {first}") from None
    return validate_config(cfg) if validate else cfg


_NO_SUCH_KEY = re.compile(r"Could not override '([^']+)'")


def unknown_key_error(err: BaseException, overrides: list[str]) -> str | None:
    """For an override of a key the composed config lacks, the keys its node does have.

    Hydra's own advice there (``+key=value`` to append) does not help: the schema refuses
    keys it does not know. None when ``err`` is another error or the node cannot be found.
    Call inside the ``initialize_config_dir`` of the compose that failed.
    """
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    match = _NO_SUCH_KEY.search(str(err))
    if match is None:
        return None
    key = match.group(1)
    rest = [o for o in overrides if override_key(o) != key]
    parent, _, leaf = key.rpartition(".")
    try:
        config = compose("config", overrides=rest)
        node = OmegaConf.select(config, parent) if parent else config
    except (HydraException, OmegaConfBaseException):
        return None
    if not isinstance(node, DictConfig):
        return None
    chosen = f" ({node['name']})" if parent and isinstance(node.get("name"), str) else ""
    keys = ", ".join(sorted(str(k) for k in node.keys()))
    return (
        f"bad override {key}: {parent or 'the config'}{chosen} has no key {leaf!r}; its keys: "
        f"{keys} (alrp-lab run --cfg job shows the composed config)"
    )
