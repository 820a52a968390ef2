"""The regime study changes one factor at a time: each block's job differs from its
counterpart in exactly the keys its label names, so a gap that moves is that factor's."""

from __future__ import annotations

from typing import Any

import pytest

from alrp_lab.sweeps.definition import load_sweep
from alrp_lab.sweeps.runner import _resolved, expand_jobs


def _config(job_id: str) -> dict[str, Any]:
    defn = load_sweep("regime")
    (job,) = [j for j in expand_jobs(defn, "cpu", seeds=[0]) if j.id == job_id]
    return _resolved(job, defn, "cpu")


def _differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted keys whose resolved values differ between two configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in a.keys() | b.keys():
            out |= _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


# (block's job, its counterpart, the keys that may differ). data.root names the cache
# folder from the generation parameters, so it follows data.image_size.
IMAGE_SIZE = {"data.image_size", "data.train_size", "data.test_size", "data.root"}
SCHEDULE_2X = {"train.epochs", "train.lr_steps"}
BLOCKS = [
    ("256px--sb", "sb-start--sb", IMAGE_SIZE),
    ("256px--ap", "today--ap", IMAGE_SIZE),
    ("256px--wr5", "today--wr5", IMAGE_SIZE),
    ("256px--wr15", "today--wr15", IMAGE_SIZE),
    ("2x-sb-start--sb", "2x--sb", {"loss.sb_start"}),
    ("2x-sb-start--sb", "sb-start--sb", SCHEDULE_2X),
]


IDS = [f"{job}/{counterpart}" for job, counterpart, _ in BLOCKS]


@pytest.mark.parametrize(("job", "counterpart", "keys"), BLOCKS, ids=IDS)
def test_a_block_changes_only_its_factor(job, counterpart, keys):
    changed = _differences(_config(job), _config(counterpart))
    # Run names and tags follow the job id; they change no computation.
    changed = {k for k in changed if k not in {"name"} and not k.startswith("logger.")}
    assert changed == keys


def test_the_larger_images_are_256_px():
    data = _config("256px--sb")["data"]
    assert (data["image_size"], data["train_size"], data["test_size"]) == (256, 256, 256)
    assert "256px" in data["root"]
