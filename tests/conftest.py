"""Suite-wide settings: W&B off, data caches under a per-session temporary folder."""

from __future__ import annotations

import os

import pytest

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the built-in data set the tests generate out of the user's cache."""
    if "ALRP_LAB_DATA" not in os.environ:
        os.environ["ALRP_LAB_DATA"] = str(tmp_path_factory.mktemp("alrp-lab-data"))
