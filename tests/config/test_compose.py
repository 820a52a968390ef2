"""compose_config outside a Hydra app: the errors a sweep and a torchrun worker show."""

from __future__ import annotations

import pytest

from alrp_lab.config.compose import compose_config
from alrp_lab.errors import ConfigError


def test_an_unknown_key_names_the_keys_of_the_chosen_node():
    with pytest.raises(ConfigError) as caught:
        compose_config(["loss=focal", "loss.delta=1"])
    message = str(caught.value)
    assert message.startswith("bad override loss.delta: loss (focal) has no key 'delta'")
    assert "its keys: alpha, gamma, name," in message and "+loss.delta" not in message


def test_an_override_that_does_not_parse_keeps_hydras_first_line():
    with pytest.raises(ConfigError, match=r"^bad override: no viable alternative at input"):
        compose_config(["loss.wr=[1"])


def test_a_good_override_composes_and_validates():
    assert compose_config(["loss=focal", "loss.gamma=1.5"]).loss.gamma == 1.5
