"""override_key: the one reading of an override's key for sweeps, definitions and errors."""

from __future__ import annotations

import pytest

from alrp_lab.utils.overrides import override_key


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=0.1", "train.lr"),
        ("+train.extra=1", "train.extra"),
        ("~loss.wr", "loss.wr"),
        ("train.lr_steps=[88,104]", "train.lr_steps"),
        ("hydra.run.dir=/a=b", "hydra.run.dir"),
        ("debug=smoke", "debug"),
    ],
)
def test_override_key(override, key):
    assert override_key(override) == key
