"""Is a completed run still the run its sweep asks for? Compare the configs, not the status.

A sweep skips a completed run only when the config it would compose now computes the same
thing as the config the run recorded in its ``results.json``. Keys that change where a run
logs or how it started, not what it computes, are left out of the comparison: ``logger``
(W&B mode, group, tags), ``train.resume`` (a resumed run is the same run), the lr rule's
inputs (``loss.ref_lr``, ``loss.ref_batch``, ``train.lr_scale``: the resolved ``train.lr``
they produce is compared), and the cache
folder of the built-in data, whose name is derived from parameters the config holds. A null
value, and a value equal to the schema's default (:class:`~alrp_lab.config.schema.RunConfig`),
count as unset: an option added later whose default is the old behaviour (``loss.sb_period``
null, ``box_error.coord_reduction`` "sum") leaves the runs recorded before it valid, while a
YAML file that sets it to something else (smooth L1's "mean") makes them stale.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from alrp_lab.config.schema import RunConfig
from alrp_lab.tracking.results import config_digest

# Top-level sections and dotted keys that do not change what a run computes. The lr rule's
# inputs are left out because the recorded config holds the lr they gave (train.lr).
IGNORED_KEYS = ("logger", "train.resume", "loss.ref_lr", "loss.ref_batch", "train.lr_scale")

__all__ = ["IGNORED_KEYS", "first_difference", "run_digest"]


_UNSET = object()


@functools.cache
def _schema_defaults() -> dict[str, Any]:
    # Built once: a sweep digests two configs per completed run. Callers only read it.
    return OmegaConf.to_container(OmegaConf.structured(RunConfig))


def _without_defaults(node: Any, defaults: Any) -> Any:
    """``node`` without nulls and without leaves equal to the schema default at their key."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            default = defaults.get(key, _UNSET) if isinstance(defaults, dict) else _UNSET
            if value is None or (not isinstance(value, dict) and value == default):
                continue
            kept = _without_defaults(value, default)
            if kept != {}:  # a section left empty says as much as an absent one
                out[key] = kept
        return out
    return node


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(config))
    for key in IGNORED_KEYS:
        *parents, leaf = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    data = out.get("data")
    if isinstance(data, dict) and data.get("name") == "shapes":
        data.pop("root", None)  # ~/.cache/alrp-lab/shapes-s0-n1200-...: the machine's cache
    # Last: data.name above must still be there when it equals the schema's default.
    return _without_defaults(out, _schema_defaults())


def run_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the parts of a resolved config that change what a run computes."""
    return config_digest(_comparable(config))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def first_difference(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """``key: recorded X, now Y`` for the first key (sorted) whose values differ."""
    old, new = _flat(_comparable(recorded)), _flat(_comparable(wanted))
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            return f"{key}: recorded {old.get(key, '<unset>')!r}, now {new.get(key, '<unset>')!r}"
    return "no key differs"
