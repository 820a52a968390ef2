from __future__ import annotations

import json
import math

import pytest

from alrp_lab.report.tables import build_table, collect_table, render_table, write_tables
from alrp_lab.sweeps.definition import parse_sweep
from alrp_lab.utils.io import atomic_write_json

GRID = {
    "title": "Table 3: AP against wr",
    "kind": "grid",
    "metric": "AP",
    "corner": "wr",
    "scales": {"cpu": {}},
    "rows": [
        {"label": "IoU", "paper": {"1": 36.9, "SB": 38.7}},
        {"label": "GIoU", "paper": {"1": 36.0}},
    ],
    "columns": [
        {"label": "1", "id": "wr1", "overrides": ["loss.wr=1"]},
        {"label": "SB", "id": "sb", "overrides": ["loss.self_balance=true"]},
    ],
}

BOUNDS = {
    "title": "Table 5 & bounds",
    "kind": "metrics",
    "metrics": ["rho", "AP", "oLRP"],
    "corner": "L",
    "scales": {"cpu": {}},
    "rows": [
        {"label": "aLRP_Loss", "id": "alrp", "paper": {"rho": 0.48, "AP": 38.7}},
        {
            "label": "Upper",
            "same_job_as": "aLRP_Loss",
            "metric_prefix": "upper_",
            "paper": {"rho": 1.0},
        },
    ],
}


def _run(folder, status="completed", error=None, **metrics):
    atomic_write_json(
        folder / "results.json",
        {"status": status, "metrics": metrics, "error": error, "config": {}},
    )


@pytest.fixture
def grid_dir(tmp_path):
    root = tmp_path / "table3"
    _run(root / "iou__wr1", AP=0.35)  # 35.0 % against the paper's 36.9
    _run(root / "iou__sb", AP=0.39125)
    _run(root / "giou__wr1", status="failed", error="NonFiniteLossError: nan at 3")
    # giou__sb never ran
    atomic_write_json(root / "sweep.json", {"name": "table3", "scale": "cpu", "definition": GRID})
    return root


EXPECTED_MD = """\
### Table 3: AP against wr

| wr |  | 1 | SB |
|---|---|---:|---:|
| IoU | ours | 35.0 | 39.1 |
|  | paper | 36.9 | 38.7 |
|  | Δ | -1.9 | +0.4 |
| GIoU | ours | failed | - |
|  | paper | 36.0 | - |
|  | Δ | - | - |

AP and oLRP in % (ours: pycocotools' fractions x 100); diff = ours - paper; for oLRP lower \
is better.
Scale: cpu (built-in data, short schedule): compare trends with the paper's COCO numbers, \
not absolute values.
Failed: giou__wr1 (NonFiniteLossError: nan at 3)
Not finished: giou__sb
"""

EXPECTED_CSV = """\
record,row,column,metric,unit,mean,std,n,paper,diff,status,job,seeds,claim,test,low,high,\
verdict,note
cell,IoU,1,AP,%,35,,1,36.9,-1.9,completed,iou__wr1,,,,,,,
cell,IoU,SB,AP,%,39.125,,1,38.7,0.425,completed,iou__sb,,,,,,,
cell,GIoU,1,AP,%,,,0,36,,failed,giou__wr1,,,,,,,
cell,GIoU,SB,AP,%,,,0,,,missing,giou__sb,,,,,,,
"""


def test_markdown_from_a_sweep_folder(grid_dir):
    assert build_table(grid_dir, "md") == EXPECTED_MD


def test_csv_has_one_line_per_cell(grid_dir):
    assert build_table(grid_dir, "csv") == EXPECTED_CSV


def test_latex_escapes_and_groups_rows(tmp_path):
    root = tmp_path / "t5"
    _run(root / "alrp", rho=0.5, AP=0.3875, oLRP=None, upper_rho=1.0, upper_AP=0.48)
    table = collect_table(parse_sweep(BOUNDS, name="table5"), root, scale="paper")
    tex = render_table(table, "tex")
    assert tex.splitlines()[1:] == [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Table 5 \& bounds}",
        r"\begin{tabular}{llrrr}",
        r"\toprule",
        r"L &  & rho & AP & oLRP \\",
        r"\midrule",
        r"aLRP\_Loss & ours & 0.50 & 38.8 & n/a \\",
        r" & paper & 0.48 & 38.7 & - \\",
        r" & $\Delta$ & +0.02 & +0.1 & - \\",
        r"\midrule",
        r"Upper & ours & 1.00 & 48.0 & n/a \\",
        r" & paper & 1.00 & - & - \\",
        r" & $\Delta$ & +0.00 & - & - \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "% AP and oLRP in % (ours: pycocotools' fractions x 100); diff = ours - paper; "
        "for oLRP lower is better.",
    ]


def test_negative_differences_get_a_typographic_minus_in_latex(grid_dir):
    assert r" & $\Delta$ & $-$1.9 & +0.4 \\" in build_table(grid_dir, "tex")


def test_bound_rows_read_prefixed_metrics_of_the_shared_run(tmp_path):
    root = tmp_path / "t5"
    _run(root / "alrp", rho=0.45, AP=0.30, oLRP=0.70, upper_rho=1.0, upper_AP=0.41, upper_oLRP=0.6)
    table = collect_table(parse_sweep(BOUNDS, name="table5"), root)
    upper = {c: table.cells["Upper", c] for c in ("rho", "AP", "oLRP")}
    assert upper["AP"].ours == pytest.approx(41.0) and upper["AP"].job == "alrp"
    assert upper["oLRP"].ours == pytest.approx(60.0) and upper["oLRP"].metric == "upper_oLRP"
    assert upper["rho"].ours == 1.0 and upper["rho"].diff == 0.0 and upper["rho"].unit == ""
    assert table.cells["aLRP_Loss", "AP"].diff == pytest.approx(30.0 - 38.7)


def test_grad_ratio_metrics_come_from_grad_balance_csv(tmp_path):
    raw = {
        "title": "F4",
        "kind": "metrics",
        "metrics": ["grad_ratio_min", "grad_ratio_max"],
        "scales": {"cpu": {}},
        "rows": [{"label": "CE", "paper": {"grad_ratio_max": 1083.708}}],
    }
    _run(tmp_path / "ce")
    (tmp_path / "ce" / "grad_balance.csv").write_text(
        "iteration,epoch,ratio\n0,0,2.5\n1,0,0.25\n2,0,40.0\n3,0,4"  # last line cut by a crash
    )
    table = collect_table(parse_sweep(raw, name="f4"), tmp_path)
    assert table.cells["CE", "grad_ratio_min"].ours == 0.25
    assert table.cells["CE", "grad_ratio_max"].ours == 40.0
    assert "| CE | ours | 0.250 | 40.000 |" in render_table(table, "md")


def test_grad_ratio_metrics_fall_back_to_the_range_recorded_in_results_json(tmp_path):
    """A copy that kept only results.json (the committed runs) still gives Figure 4's
    columns from the range the trainer recorded; the csv wins where both exist."""
    raw = {
        "title": "F4",
        "kind": "metrics",
        "metrics": [
            "grad_ratio_min",
            "grad_ratio_max",
            "grad_ratio_spread",
            "grad_ratio_log_spread",
        ],
        "scales": {"cpu": {}},
        "rows": [{"label": "CE"}, {"label": "FL"}, {"label": "A"}, {"label": "B"}],
    }
    recorded = {"grad_balance": {"min": 0.5, "max": 20.0, "count": 3}}
    for job, extra in [
        ("ce", recorded),
        ("fl", recorded),
        ("a", {}),
        ("b", {"grad_balance": {"min": 0.0, "max": 3.0}}),
    ]:
        atomic_write_json(
            tmp_path / job / "results.json",
            {"status": "completed", "metrics": {}, "error": None, "config": {}, "extra": extra},
        )
    (tmp_path / "fl" / "grad_balance.csv").write_text("iteration,epoch,ratio\n0,0,2.0\n1,0,8.0\n")
    table = collect_table(parse_sweep(raw, name="f4"), tmp_path)
    assert table.cells["CE", "grad_ratio_min"].ours == 0.5
    assert table.cells["CE", "grad_ratio_max"].ours == 20.0
    assert table.cells["CE", "grad_ratio_spread"].ours == 40.0
    assert table.cells["CE", "grad_ratio_log_spread"].ours == pytest.approx(math.log10(40.0))
    assert table.cells["FL", "grad_ratio_max"].ours == 8.0  # the file, not the record
    assert table.cells["FL", "grad_ratio_log_spread"].ours == pytest.approx(math.log10(4.0))
    # Nothing recorded, or a range that cannot be a ratio's: no value, as without a file.
    assert table.cells["A", "grad_ratio_min"].ours is None
    assert table.cells["B", "grad_ratio_spread"].ours is None
    assert table.cells["B", "grad_ratio_log_spread"].ours is None


def test_write_tables_writes_all_three_formats(grid_dir):
    defn = parse_sweep(GRID, name="table3")
    paths = write_tables(defn, grid_dir, scale="cpu")
    assert {p.name for p in paths.values()} == {"table3.md", "table3.csv", "table3.tex"}
    assert paths["md"].read_text() == EXPECTED_MD


def test_a_folder_of_plain_runs_gets_one_row_per_run(tmp_path):
    _run(tmp_path / "2024-01-01" / "a", AP=0.5, AP50=0.75, rho=0.4)
    _run(tmp_path / "b", AP=0.25)
    md = build_table(tmp_path, "md")
    assert f"### Runs under {tmp_path}" in md
    assert "|  |  | AP | AP50 | AP75 | AP90 | oLRP | rho |" in md
    assert "| 2024-01-01/a | ours | 50.0 | 75.0 | n/a | n/a | n/a | 0.40 |" in md
    assert "| b | ours | 25.0 | n/a |" in md and "paper" not in md.split("\n\n")[1]


def test_a_sweep_name_means_its_default_folder(tmp_path, monkeypatch, grid_dir):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(
        ValueError,
        match=r"outputs/sweeps/table3 does not exist: run the sweep "
        r"first \(alrp-lab sweep table3\)",
    ):
        build_table("table3")
    (tmp_path / "work" / "outputs" / "sweeps").mkdir(parents=True)
    grid_dir.rename(tmp_path / "work" / "outputs" / "sweeps" / "table3")
    assert build_table("table3") == EXPECTED_MD


def test_empty_folder_says_to_run_the_sweep_first(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path} holds no results.json: run the sweep"):
        build_table(tmp_path)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "train.log").write_text("")
    with pytest.raises(ValueError, match="holds no results.json"):
        build_table(tmp_path)


def test_bad_names_formats_and_manifests(tmp_path, grid_dir):
    with pytest.raises(ValueError, match="neither a folder nor a sweep name .*table3"):
        build_table(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown table format 'html': use one of md, csv, tex"):
        build_table(grid_dir, "html")
    (grid_dir / "sweep.json").write_text(json.dumps({"name": "x", "definition": {"kind": "?"}}))
    with pytest.raises(ValueError, match="sweep.json is damaged"):
        build_table(grid_dir)


def _losses(folder, values):
    """metrics.jsonl with one record per value of loss_cls."""
    text = "".join(
        json.dumps({"step": i, "epoch": 0, "loss_cls": v}) + "\n" for i, v in enumerate(values)
    )
    (folder / "metrics.jsonl").write_text(text)


def test_a_completed_run_that_broke_down_is_named_under_the_table(grid_dir):
    # IoU/1 fell from 1.0 to 0.0 and came back to 0.5 at the end: rebound (0.5-0)/(1-0).
    _losses(grid_dir / "iou__wr1", [1.0] * 10 + [0.0] * 20 + [0.5] * 20)
    _losses(grid_dir / "iou__sb", [1.0] * 10 + [0.2] * 40)  # trained, no rebound
    text = build_table(grid_dir, "md")
    assert text.count("Broke down") == 1
    assert "rebound in brackets): iou__wr1 (0.50)" in text
    # Halfway back is the line: a rebound under REBOUND_DIVERGED is not named.
    _losses(grid_dir / "iou__wr1", [1.0] * 10 + [0.0] * 20 + [0.49] * 20)
    assert "Broke down" not in build_table(grid_dir, "md")
    # A run without a log is not judged.
    (grid_dir / "iou__wr1" / "metrics.jsonl").unlink()
    assert "Broke down" not in build_table(grid_dir, "md")


def test_a_completed_run_that_never_learnt_is_named_under_the_table(grid_dir):
    # IoU/1's loss stayed at its start: a flat loss has no rebound.
    _losses(grid_dir / "iou__wr1", [1.0] * 50)
    _losses(grid_dir / "iou__sb", [1.0] * 10 + [0.2] * 40)  # trained
    text = build_table(grid_dir, "md")
    assert "never came 0.1 below the first window's mean): iou__wr1\n" in text
    assert text.count("Never learnt") == 1
    assert "Broke down" not in text
    # A fall of 0.2 is learning, even if the run then came all the way back: that is a
    # breakdown, named as one and not twice.
    _losses(grid_dir / "iou__wr1", [1.0] * 10 + [0.8] * 10 + [1.0] * 30)
    text = build_table(grid_dir, "md")
    assert "Never learnt" not in text
    assert "rebound in brackets): iou__wr1 (1.00)" in text
    # A run without a log is not judged, nor one still running.
    (grid_dir / "iou__wr1" / "metrics.jsonl").unlink()
    assert "Never learnt" not in build_table(grid_dir, "md")
    _run(grid_dir / "iou__sb", status="running")
    _losses(grid_dir / "iou__sb", [1.0] * 50)
    assert "Never learnt" not in build_table(grid_dir, "md")


def test_a_run_that_never_learnt_is_named_once_though_it_fills_several_cells(tmp_path):
    _run(tmp_path / "a", AP=0.0, AP50=0.0, rho=0.0)  # one row, six metric columns
    _losses(tmp_path / "a", [1.0] * 50)
    text = build_table(tmp_path, "md")
    assert text.count("Never learnt") == 1
    assert text.endswith("the first window's mean): a\n")
