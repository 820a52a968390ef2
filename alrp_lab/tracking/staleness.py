"""Is a completed run still the run its sweep asks for? Compare the configs, not the status.

A sweep skips a completed run only when the config it would compose now computes the same
thing as the config the run recorded in its ``results.json``. Left out of the comparison:

- keys that change where a run logs or how it started, not what it computes: ``logger``
  (W&B mode, group, tags), ``train.resume`` (a resumed run is the same run), the lr rule's
  inputs (``loss.ref_lr``, ``loss.ref_batch``, ``train.lr_scale``: the resolved
  ``train.lr`` they produce is compared), and the cache folder of the built-in data, whose
  name is derived from parameters the config holds;
- keys the run's choices do not read: a section with choices keeps only its choice's keys
  (``config.schema.section_keys``), so a run recorded when every loss carried Focal Loss's
  ``alpha`` still matches; ``pretrain`` unless ``backbone.weights`` is ``builtin``; SB's
  options (``loss.sb_init``, ``sb_period``, ``sb_start``) when ``loss.self_balance`` is
  false, and ``loss.wr`` when it is true, so a scale that sets SB's cadence for every job
  leaves its constant-weight runs valid;
- nulls, and an option added after runs were recorded, at the value that reproduces the
  behaviour before it (``LEGACY_VALUES``): ``loss.interpolated`` false leaves earlier AP
  Loss runs valid, while a YAML file that sets it to something else makes them stale.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

from alrp_lab.config.schema import CHOICE_NODES, section_keys
from alrp_lab.data import BUILTIN_DATASETS
from alrp_lab.tracking.results import config_digest

# Top-level sections and dotted keys that do not change what a run computes. The lr rule's
# inputs are left out because the recorded config holds the lr they gave (train.lr).
IGNORED_KEYS = ("logger", "train.resume", "loss.ref_lr", "loss.ref_batch", "train.lr_scale")

# Options added after runs were recorded, at the value that computes what the code computed
# before the option existed. A null counts as unset anyway (loss.sb_period, loss.sb_start,
# train.grad_clip, train.amp).
LEGACY_VALUES: dict[str, Any] = {
    "loss.interpolated": False,
    "loss.zero_target": False,
    "loss.global_rank": False,
    "box_error.coord_reduction": "sum",
    "train.eval_bounds": False,
    "train.nproc_per_node": 1,
    "train.nnodes": 1,
    "train.channels_last": False,
}

# Loss keys a run does not read, by loss.self_balance.
_UNREAD_LOSS_KEYS = {True: ("wr",), False: ("sb_init", "sb_period", "sb_start")}

__all__ = [
    "IGNORED_KEYS",
    "LEGACY_VALUES",
    "Difference",
    "comparable",
    "differences",
    "first_difference",
    "run_digest",
]


def _pop(node: Any, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def _drop_unset(node: Any, prefix: str = "") -> Any:
    """``node`` without nulls, legacy values and sections left empty."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if value is None or (dotted in LEGACY_VALUES and value == LEGACY_VALUES[dotted]):
            continue
        kept = _drop_unset(value, f"{dotted}.")
        if kept != {}:  # a section left empty says as much as an absent one
            out[key] = kept
    return out


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with only what changes what a run computes (the module's list above), so
    that configs recorded by older code compare equal to today's."""
    out = copy.deepcopy(dict(config))
    for key in IGNORED_KEYS:
        _pop(out, key)
    for section in (*CHOICE_NODES, "data"):
        node = out.get(section)
        if isinstance(node, dict):
            keys = section_keys(section, node.get("name"))
            if keys is not None:
                out[section] = {k: v for k, v in node.items() if k in keys}
    data = out.get("data")
    if isinstance(data, dict) and data.get("name") in BUILTIN_DATASETS:
        data.pop("root", None)  # ~/.cache/alrp-lab/shapes-s0-n1200-...: the machine's cache
    if (out.get("backbone") or {}).get("weights") != "builtin":
        out.pop("pretrain", None)  # only the built-in weights are made from it
    loss = out.get("loss")
    if isinstance(loss, dict) and "self_balance" in loss:
        # models.parts.build_loc_weight reads SB's options or the constant wr, never both.
        for key in _UNREAD_LOSS_KEYS[bool(loss["self_balance"])]:
            loss.pop(key, None)
    return _drop_unset(out)


_UNSET = "<unset>"


class Difference(NamedTuple):
    """One key whose value differs between a recorded config and another."""

    key: str
    recorded: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key}: recorded {self.recorded!r}, now {self.now!r}"


def run_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the parts of a resolved config that change what a run computes."""
    return config_digest(comparable(config))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[Difference]:
    """Every key (dotted, sorted) whose value differs between the two configs, among the
    keys that change what a run computes; empty when they compute the same run. A key one
    of them lacks has the value ``"<unset>"`` there."""
    old, new = _flat(comparable(recorded)), _flat(comparable(wanted))
    return [
        Difference(key, old.get(key, _UNSET), new.get(key, _UNSET))
        for key in sorted(set(old) | set(new))
        if old.get(key, _UNSET) != new.get(key, _UNSET)
    ]


def first_difference(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """``key: recorded X, now Y`` for the first key (sorted) whose values differ."""
    return next((str(each) for each in differences(recorded, wanted)), "no key differs")
