from __future__ import annotations

import math

import pytest

from alrp_lab.report.curves import REBOUND_DIVERGED, epoch_means, loss_rebound, rebound
from alrp_lab.utils.io import append_jsonl


def test_epoch_means_average_each_epoch_and_skip_what_is_not_a_number():
    records = [
        {"step": 0, "epoch": 0, "loss_cls": 1.0},
        {"step": 10, "epoch": 0, "loss_cls": 0.8},
        {"step": 20, "epoch": 1, "loss_cls": None},  # a non-finite value is stored as null
        {"step": 30, "epoch": 1, "loss_cls": 0.5},
        {"step": 40, "epoch": 2, "loss_cls": math.nan},
        {"step": 50, "loss_cls": 0.1},  # no epoch
        {"step": 60, "epoch": 3, "loss": 2.0},  # no loss_cls: epoch 3 is left out
    ]
    assert epoch_means(records) == pytest.approx([0.9, 0.5])


def test_epochs_come_in_order_whatever_the_order_of_the_lines():
    records = [{"epoch": 2, "loss_cls": 0.2}, {"epoch": 0, "loss_cls": 1.0}]
    assert epoch_means(records) == pytest.approx([1.0, 0.2])


@pytest.mark.parametrize(
    ("means", "expected"),
    [
        ([1.0, 0.5, 0.2], 0.0),  # ends at its lowest
        ([1.0, 0.2, 0.6], 0.5),  # halfway back up
        ([1.0, 0.2, 1.0], 1.0),  # back where it started
        ([0.9, 0.4, 1.4], 2.0),  # above its start
        ([1.0], None),  # one epoch: no curve
        ([0.5, 0.7, 0.9], None),  # never went below its start: nothing learnt to lose
    ],
)
def test_rebound(means, expected):
    assert rebound(means) == (None if expected is None else pytest.approx(expected))


def test_loss_rebound_reads_the_run_folder(tmp_path):
    for epoch, value in enumerate([0.99, 0.6, 0.4, 0.9]):
        for step in range(3):
            append_jsonl(
                tmp_path / "metrics.jsonl",
                {"step": 3 * epoch + step, "epoch": epoch, "loss_cls": value + 0.01 * (step - 1)},
            )
    assert loss_rebound(tmp_path) == pytest.approx(0.5 / 0.59)
    assert loss_rebound(tmp_path) >= REBOUND_DIVERGED
    with pytest.raises(FileNotFoundError):
        loss_rebound(tmp_path / "elsewhere")
