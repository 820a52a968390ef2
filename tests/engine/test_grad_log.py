"""grad_balance.csv's writer, cutter and summary (engine/grad_log.py)."""

from __future__ import annotations

from alrp_lab.engine.grad_log import (
    HEADER,
    append_grad_balance,
    start_grad_balance,
    summarize_grad_balance,
)


def test_summary_is_the_range_of_the_positive_finite_ratios_as_written(tmp_path):
    path = tmp_path / "grad_balance.csv"
    start_grad_balance(path, None)
    for iteration, ratio in enumerate([2.0, 0.1234567, 40.0, 0.0, float("nan"), 3.0]):
        append_grad_balance(path, iteration, 0, ratio)
    with path.open("a") as handle:
        handle.write("6,0,1e")  # a line cut by a crash
    # 0.1234567 is written with 6 decimals: the summary matches the file, not the float.
    assert summarize_grad_balance(path) == {"min": 0.123457, "max": 40.0, "count": 4}


def test_no_summary_without_a_file_or_without_a_usable_ratio(tmp_path):
    path = tmp_path / "grad_balance.csv"
    assert summarize_grad_balance(path) is None
    path.write_text(HEADER + "0,0,0.000000\n1,0,nan\n")
    assert summarize_grad_balance(path) is None


def test_a_resume_keeps_only_the_lines_before_its_first_iteration(tmp_path):
    path = tmp_path / "grad_balance.csv"
    path.write_text(HEADER + "0,0,1.0\n1,0,2.0\n2,1,9.0\nbroken\n3,1,9.0\n")
    start_grad_balance(path, 2)
    assert path.read_text() == HEADER + "0,0,1.0\n1,0,2.0\n"
    assert summarize_grad_balance(path) == {"min": 1.0, "max": 2.0, "count": 2}
