"""grad_balance.csv's writer, cut, reader and summary (tracking/grad_balance.py)."""

from __future__ import annotations

import pytest

from alrp_lab.errors import ResultsError, ResultsNotFoundError
from alrp_lab.tracking.grad_balance import (
    GRAD_BALANCE_FILE,
    HEADER,
    append_grad_balance,
    read_grad_balance,
    start_grad_balance,
    summarize_grad_balance,
)


def test_summary_is_the_range_of_the_positive_finite_ratios_as_written(tmp_path):
    path = tmp_path / GRAD_BALANCE_FILE
    start_grad_balance(path, None)
    for iteration, ratio in enumerate([2.0, 0.1234567, 40.0, 0.0, float("nan"), 3.0, -1.0]):
        append_grad_balance(path, iteration, 0, ratio)
    with path.open("a") as handle:
        handle.write("7,0,1e")  # a line cut by a crash
    # 0.1234567 is written with 6 decimals: the summary matches the file, not the float.
    assert summarize_grad_balance(tmp_path) == {"min": 0.123457, "max": 40.0, "count": 4}


def test_no_summary_without_a_file_a_usable_ratio_or_a_readable_file(tmp_path):
    path = tmp_path / GRAD_BALANCE_FILE
    assert summarize_grad_balance(tmp_path) is None
    path.write_text(HEADER + "0,0,0.000000\n1,0,nan\n")
    assert summarize_grad_balance(tmp_path) is None
    path.write_bytes(HEADER.encode() + b"0,0,\xff\n")  # not UTF-8
    assert summarize_grad_balance(tmp_path) is None
    # Iterations written twice: the report refuses the file, and the summary gives nothing
    # rather than a range the report would not give.
    path.write_text(HEADER + "0,0,1.0\n1,0,2.0\n1,0,9.0\n")
    with pytest.raises(ResultsError, match="written twice"):
        read_grad_balance(tmp_path)
    assert summarize_grad_balance(tmp_path) is None


@pytest.mark.parametrize(
    "line",
    ["2,0,3.0,extra", '"2","0","3.0"', "+2,0,3.0", " 2,0,3.0", "2,0, 3.0"],
)
def test_the_reader_and_the_summary_agree_on_every_line(tmp_path, line):
    """One parser for both: a line either counts for both or for neither."""
    (tmp_path / GRAD_BALANCE_FILE).write_text(HEADER + "0,0,1.0\n1,0,2.0\n" + line + "\n")
    read = [r for r in read_grad_balance(tmp_path).ratios if r > 0]
    summary = summarize_grad_balance(tmp_path)
    assert summary == {"min": min(read), "max": max(read), "count": len(read)}
    assert summary["max"] == 3.0


def test_the_reader_finds_the_columns_by_the_headers_names(tmp_path):
    (tmp_path / GRAD_BALANCE_FILE).write_text("ratio,iteration\n0.5,0\n4.0,1\n")
    assert read_grad_balance(tmp_path) == ([0, 1], [0.5, 4.0])
    with pytest.raises(ResultsNotFoundError, match="train.grad_balance=true"):
        read_grad_balance(tmp_path / "missing")


def test_a_resume_keeps_only_the_lines_before_its_first_iteration(tmp_path):
    path = tmp_path / GRAD_BALANCE_FILE
    path.write_text(HEADER + "0,0,1.0\n1,0,2.0\n2,1,9.0\nbroken\n3,1,9.0\n")
    start_grad_balance(path, 2)
    assert path.read_text() == HEADER + "0,0,1.0\n1,0,2.0\n"
    assert summarize_grad_balance(tmp_path) == {"min": 1.0, "max": 2.0, "count": 2}
