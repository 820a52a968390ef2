from __future__ import annotations

import pytest
from PIL import Image

from alrp_lab.cli import main
from alrp_lab.errors import ResultsError
from alrp_lab.report.curve_plot import curve_series, plot_curves
from alrp_lab.utils.io import append_jsonl, atomic_write_json


def _log(run, rows):
    """metrics.jsonl with one record per (epoch, loss_cls[, eloc_over_one])."""
    for step, row in enumerate(rows):
        record = {"step": step, "epoch": row[0], "loss_cls": row[1]}
        if len(row) > 2:
            record["eloc_over_one"] = row[2]
        append_jsonl(run / "metrics.jsonl", record)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "iou_breakdown"
    jobs = [{"id": "iou-wr1", "row": "IoU, wr 1", "column": None, "seed": s} for s in (0, 1)] + [
        {"id": "giou__wr1", "row": "GIoU", "column": "1", "seed": 0}
    ]
    atomic_write_json(root / "sweep.json", {"name": "x", "scale": "cpu", "jobs": jobs})
    _log(root / "iou-wr1" / "seed0", [(0, 1.0, 0.5), (0, 0.8, 0.3), (1, 0.6, 0.1)])
    _log(root / "iou-wr1" / "seed1", [(0, 0.9), (1, 0.7)])
    _log(root / "giou__wr1" / "seed0", [(0, 0.9), (1, 0.2)])
    (root / "giou__wr1" / "seed1").mkdir(parents=True)  # a run without a curve
    return root


def test_curves_are_labelled_by_the_sweeps_rows_and_read_per_epoch(sweep):
    series = curve_series(sweep)
    # In sweep.json's job order, not the folders' (giou__wr1 sorts first there).
    assert [(s.label, s.run_dir.name) for s in series["loss_cls"]] == [
        ("IoU, wr 1", "seed0"),
        ("IoU, wr 1", "seed1"),
        ("GIoU / 1", "seed0"),
    ]
    iou0 = series["loss_cls"][0]
    assert iou0.points == [(0.5, pytest.approx(0.9)), (2.0, 0.6)]  # (mean step, mean value)
    # Only the run that logged it has an Eloc curve.
    assert [s.run_dir.parent.name for s in series["eloc_over_one"]] == ["iou-wr1"]


def test_columns_come_in_the_tables_order_not_the_folders(tmp_path):
    root = tmp_path / "table4"
    inits = ("1", "50", "100", "500")  # folder order: init1, init100, init50, init500
    jobs = [{"id": f"sb__init{i}", "row": "SB", "column": i, "seed": 0} for i in inits]
    atomic_write_json(root / "sweep.json", {"name": "t", "scale": "cpu", "jobs": jobs})
    for init in reversed(inits):
        _log(root / f"sb__init{init}" / "seed0", [(0, 1.0), (1, 0.5)])
    _log(root / "unlisted" / "seed0", [(0, 1.0)])  # a job the sweep does not list: last
    labels = [s.label for s in curve_series(root)["loss_cls"]]
    assert labels == ["SB / 1", "SB / 50", "SB / 100", "SB / 500", "unlisted"]


def test_without_a_sweep_file_runs_are_named_by_their_job_folder(sweep):
    (sweep / "sweep.json").unlink()
    labels = [s.label for s in curve_series(sweep)["loss_cls"]]
    assert labels == ["giou__wr1", "iou-wr1", "iou-wr1"]  # folder order
    only = curve_series([sweep / "giou__wr1" / "seed0"], keys=["loss_cls"])
    assert [s.label for s in only["loss_cls"]] == ["giou__wr1"]


def test_one_panel_per_key_logged(sweep, tmp_path):
    with Image.open(plot_curves(sweep, tmp_path / "both.png")) as image:
        assert image.size[0] == 1440
    for run in (sweep / "iou-wr1" / "seed0",):
        (run / "metrics.jsonl").write_text('{"step": 0, "epoch": 0, "loss_cls": 1.0}\n')
    with Image.open(plot_curves(sweep, tmp_path / "one.png")) as image:
        assert image.size[0] == 720


def test_no_curve_is_a_clear_error_and_a_damaged_file_is_left_out(sweep, tmp_path, caplog):
    with pytest.raises(ResultsError, match="logs grad_norm"):
        plot_curves(sweep, tmp_path / "none.png", keys=["grad_norm"])
    (sweep / "iou-wr1" / "seed1" / "metrics.jsonl").write_text("not json\n")
    assert len(curve_series(sweep)["loss_cls"]) == 2
    assert "left out of the curves" in caplog.text


def test_the_plot_command_and_the_sweep_draw_it(sweep):
    from alrp_lab.sweeps.runner import _try_plot

    assert main(["plot", "loss-curves", str(sweep)]) == 0
    assert (sweep / "loss_curves.png").is_file()
    (sweep / "loss_curves.png").unlink()
    assert _try_plot(sweep, "loss_curves") == sweep / "loss_curves.png"


def test_the_plot_command_takes_several_run_folders_with_out(sweep, tmp_path, capsys):
    runs = [str(sweep / "iou-wr1" / "seed0"), str(sweep / "giou__wr1" / "seed0")]
    assert main(["plot", "loss-curves", *runs, "--out", str(tmp_path / "two.png")]) == 0
    assert (tmp_path / "two.png").is_file()
    assert main(["plot", "loss-curves", *runs]) == 2
    assert "--out PNG" in capsys.readouterr().err
    assert main(["plot", "claim-trend", *runs, "--out", str(tmp_path / "x.png")]) == 2


def test_any_logged_key_on_request_and_a_log_scale(sweep, tmp_path, capsys):
    for run in ("iou-wr1/seed0", "giou__wr1/seed0"):
        append_jsonl(sweep / run / "metrics.jsonl", {"step": 9, "epoch": 1, "loc_weight": 50.0})
    series = curve_series(sweep, keys=["loc_weight"])
    assert [s.points for s in series["loc_weight"]] == [[(9.0, 50.0)], [(9.0, 50.0)]]
    out = tmp_path / "sb.png"
    args = ["plot", "loss-curves", str(sweep), "--key", "loc_weight", "--key", "loss_cls"]
    assert main([*args, "--log-y", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size[0] == 1440, "two panels, one per key"
    capsys.readouterr()
    for figure in ("grad-balance", "claim-trend"):
        assert main(["plot", figure, str(sweep), "--key", "loc_weight"]) == 2
        assert "loss-curves' options" in capsys.readouterr().err
        assert main(["plot", figure, str(sweep), "--log-y"]) == 2


def test_log_y_keeps_a_panel_with_zeros_linear(sweep, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    scales = []
    monkeypatch.setattr(Axes, "set_yscale", lambda self, value, **kw: scales.append(value))
    # A share of positives with Eloc > 1 is often 0 for a whole epoch.
    append_jsonl(sweep / "iou-wr1" / "seed0" / "metrics.jsonl", {"epoch": 2, "eloc_over_one": 0})
    plot_curves(sweep, tmp_path / "log.png", log_y=True)
    assert scales == ["log"], "the loss panel only"
