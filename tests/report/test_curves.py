from __future__ import annotations

import math

import pytest

from alrp_lab.report.curves import (
    MIN_DROP,
    REBOUND_DIVERGED,
    curve_values,
    epoch_curve,
    loss_rebound,
    loss_relapse,
    rebound,
    relapse,
)
from alrp_lab.utils.io import append_jsonl


def test_epoch_curve_averages_each_epoch_and_skips_what_is_not_a_number():
    records = [
        {"step": 0, "epoch": 0, "loss_cls": 1.0},
        {"step": 10, "epoch": 0, "loss_cls": 0.8},
        {"step": 20, "epoch": 1, "loss_cls": None},  # a non-finite value is stored as null
        {"step": 30, "epoch": 1, "loss_cls": 0.5},
        {"step": 40, "epoch": 2, "loss_cls": math.nan},
        {"step": 50, "loss_cls": 0.1},  # no epoch
        {"step": 60, "epoch": 3, "loss": 2.0},  # no loss_cls: epoch 3 is left out
        {"epoch": 4, "loss_cls": 0.3},  # no step: placed at its epoch number
        {"step": 90, "epoch": 5, "loss_cls": 0.2},
        {"epoch": 5, "loss_cls": 0.4},  # its step is averaged over the records that have one
    ]
    points = epoch_curve(records)
    assert [x for x, _ in points] == pytest.approx([5.0, 30.0, 4.0, 90.0])
    assert [y for _, y in points] == pytest.approx([0.9, 0.5, 0.3, 0.3])
    assert curve_values(records) == pytest.approx([1.0, 0.8, 0.5, 0.1, 0.3, 0.2, 0.4])


def test_epochs_come_in_order_whatever_the_order_of_the_lines():
    records = [{"step": 9, "epoch": 2, "loss_cls": 0.2}, {"step": 0, "epoch": 0, "loss_cls": 1.0}]
    assert epoch_curve(records) == [(0.0, 1.0), (9.0, 0.2)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 0.5, 0.2], 0.0),  # ends at its lowest
        ([1.0, 0.2, 0.6], 0.5),  # halfway back up
        ([1.0, 0.2, 1.0], 1.0),  # back where it started
        ([0.9, 0.4, 1.4], 2.0),  # above its start
    ],
)
def test_rebound(values, expected):
    assert rebound(values).value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([1.0], "no curve"),
        ([], "no curve"),
        ([0.5, 0.7, 0.9], "nothing learnt"),  # never went below its start
        ([1.0, 0.995, 0.998], "nothing learnt"),  # noise, not a drop: no rebound of 0.6
    ],
)
def test_no_rebound_without_a_curve_that_fell(values, reason):
    result = rebound(values)
    assert result.value is None and reason in result.reason
    assert rebound([1.0, 1.0 - 1.5 * MIN_DROP, 1.0]).value == pytest.approx(1.0)


def test_windows_see_a_breakdown_early_in_a_long_run():
    # 2000 values: a fall over the first 150, a return over the next 150, then flat at the
    # start. One epoch holding them all would show nothing; the windows do.
    values = [1.0 - 0.3 * i / 150 for i in range(150)]
    values += [0.7 + 0.3 * i / 150 for i in range(150)]
    values += [1.0] * 1700
    result = rebound(values)
    assert result.value is not None and result.value >= REBOUND_DIVERGED
    # The shape of a zero-target run at the cpu scale: down from 1.00 to 0.77 over the
    # first 5% of the run, back up over the next 5%, then flat. Windows of a twentieth
    # average the fall and the return together and see no drop at all.
    run = [1.0 - 0.23 * i / 90 for i in range(90)] + [0.77 + 0.23 * i / 90 for i in range(90)]
    run += [1.0] * 1500
    assert rebound(run, windows=20).value is None
    assert rebound(run).value > 1.0  # back above its first window
    # Windows are means of equal runs of consecutive values.
    assert rebound([1.0, 1.0, 0.2, 0.2, 0.6, 0.6], windows=3).value == pytest.approx(0.5)


def test_loss_rebound_reads_the_run_folder(tmp_path):
    for step, value in enumerate([0.99, 0.6, 0.4, 0.9]):
        append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "epoch": 0, "loss_cls": value})
    assert loss_rebound(tmp_path).value == pytest.approx(0.5 / 0.59)
    missing = loss_rebound(tmp_path / "elsewhere")
    assert missing.value is None and missing.reason == "no metrics.jsonl"


def test_a_damaged_metrics_file_gives_a_reason_not_a_crash(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss_cls": 1.0}\nnot json\n{"step": 1}\n')
    result = loss_rebound(tmp_path)
    assert (
        result.value is None and "line 2" in result.reason and "repair or delete" in result.reason
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 0.5, 0.2], 0.0),  # never rose
        ([1.0, 0.2, 0.6, 0.2], 0.5),  # halfway back up, then down again: rebound 0
        ([1.0, 0.2, 1.0, 0.1], 0.8 / 0.9),  # back to its start, then lower than before
        ([1.0, 0.4, 0.6, 0.2, 0.5], 0.3 / 0.8),  # the largest rise above the low before it
        ([1.0, 1.3, 0.5], 0.0),  # a rise before any fall is not a relapse
        ([1.0, 0.2, 1.4, 0.3], 1.0),  # counted up to where it started: at most 1
    ],
)
def test_relapse(values, expected):
    assert relapse(values).value == pytest.approx(expected)
    assert relapse(values).value >= min(rebound(values).value, 1.0)


def test_relapse_sees_what_an_lr_step_hid_and_needs_a_curve_that_fell(tmp_path):
    # The shape of a breakdown ended by an lr step: fall, rise, fall again below.
    values = [0.9] * 10 + [0.25] * 10 + [0.65] * 10 + [0.2] * 10
    assert rebound(values, windows=4).value == pytest.approx(0.0)
    assert relapse(values, windows=4).value == pytest.approx(0.4 / 0.7)
    assert relapse([0.5, 0.7, 0.9]).reason.endswith("nothing learnt")
    for step, value in enumerate([0.99, 0.4, 0.9, 0.3]):
        append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "epoch": 0, "loss_cls": value})
    assert loss_relapse(tmp_path).value == pytest.approx(0.5 / 0.69)
    assert loss_relapse(tmp_path / "elsewhere").reason == "no metrics.jsonl"
