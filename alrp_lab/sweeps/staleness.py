"""Is a completed run still the run its sweep asks for? Compare the configs, not the status.

A sweep skips a completed run only when the config it would compose now computes the same
thing as the config the run recorded in its ``results.json``. Keys that change where a run
logs or how it started, not what it computes, are left out of the comparison: ``logger``
(W&B mode, group, tags), ``train.resume`` (a resumed run is the same run), and the cache
folder of the built-in data, whose name is derived from parameters the config holds. A null
value counts as unset, so an option added later with a null default (off: the old
behaviour, e.g. ``loss.sb_period``) leaves the runs recorded before it valid.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from alrp_lab.tracking.results import config_digest

# Top-level sections and dotted keys that do not change what a run computes.
IGNORED_KEYS = ("logger", "train.resume")

__all__ = ["IGNORED_KEYS", "first_difference", "run_digest"]


def _without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    return node


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    out = _without_nulls(copy.deepcopy(dict(config)))
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
    return out


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
