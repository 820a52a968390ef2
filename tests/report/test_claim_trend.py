"""The claim-trend figure: claims' differences against a factor, from results files alone."""

from __future__ import annotations

import pytest

from alrp_lab.errors import ResultsError
from alrp_lab.report.plots import plot_claim_trend
from alrp_lab.sweeps.definition import SWEEP_FILE, parse_sweep
from alrp_lab.tracking.results import RunRecorder
from alrp_lab.utils.io import atomic_write_json

RAW = {
    "title": "Toy trend",
    "kind": "metrics",
    "metrics": ["AP"],
    "scales": {"cpu": {"overrides": []}},
    "rows": [
        {"label": "a1", "overrides": ["loss=alrp"]},
        {"label": "b1", "overrides": ["loss=ap"]},
        {"label": "a2", "overrides": ["loss=alrp", "train.epochs=2"]},
        {"label": "b2", "overrides": ["loss=ap", "train.epochs=2"]},
    ],
    "claims": [
        {
            "name": "gap1",
            "paper": "x",
            "metric": "AP",
            "a": {"row": "a1"},
            "b": {"row": "b1"},
            "expect": ">",
            "paper_diff": 1.0,
        },
        {
            "name": "gap2",
            "paper": "x",
            "metric": "AP",
            "a": {"row": "a2"},
            "b": {"row": "b2"},
            "expect": ">",
            "paper_diff": 1.0,
        },
    ],
    "figure": "claim_trend",
    "trend": {
        "x": [1, 2],
        "xlabel": "schedule",
        "series": [{"label": "a - b", "claims": ["gap1", "gap2"]}],
    },
    "seeds": 2,
}


def _complete(run_dir, ap):
    recorder = RunRecorder(run_dir, {"overrides": []})
    recorder.start()
    recorder.complete({"AP": ap})


def test_trend_plot_from_results_files(tmp_path):
    defn = parse_sweep(RAW, name="toy")
    atomic_write_json(
        tmp_path / SWEEP_FILE,
        {"name": "toy", "definition": RAW, "scale": "cpu", "seeds": [0, 1], "jobs": []},
    )
    for seed, (a1, b1, a2, b2) in enumerate([(0.30, 0.32, 0.36, 0.33), (0.31, 0.33, 0.37, 0.34)]):
        for row, ap in zip(defn.rows, (a1, b1, a2, b2), strict=True):
            _complete(tmp_path / row.id / f"seed{seed}", ap)
    out = plot_claim_trend(tmp_path, tmp_path / "trend.png")
    assert out.is_file() and out.stat().st_size > 1000


def test_a_series_may_skip_an_x_with_null(tmp_path):
    """A series measured at some x values only: null leaves its gap out there."""
    import copy

    raw = copy.deepcopy(RAW)
    raw["trend"]["series"].append({"label": "a2 - b2 only", "claims": [None, "gap2"]})
    defn = parse_sweep(raw, name="toy")
    assert defn.trend.series[1].claims == (None, "gap2")
    atomic_write_json(
        tmp_path / SWEEP_FILE,
        {"name": "toy", "definition": raw, "scale": "cpu", "seeds": [0, 1], "jobs": []},
    )
    for seed in (0, 1):
        for row, ap in zip(defn.rows, (0.30, 0.32, 0.36, 0.33), strict=True):
            _complete(tmp_path / row.id / f"seed{seed}", ap + 0.01 * seed)
    out = plot_claim_trend(tmp_path, tmp_path / "trend.png")
    assert out.is_file() and out.stat().st_size > 1000


def test_a_definition_without_trend_is_one_error(tmp_path):
    raw = {k: v for k, v in RAW.items() if k not in ("figure", "trend")}
    atomic_write_json(tmp_path / SWEEP_FILE, {"name": "toy", "definition": raw, "seeds": [0]})
    with pytest.raises(ResultsError, match="claim_trend"):
        plot_claim_trend(tmp_path, tmp_path / "x.png")


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: r["trend"].update(x=[1]), "one claim per x value"),
        (lambda r: r["trend"]["series"][0].update(claims=["gap1", "nope"]), "unknown claims"),
        (lambda r: r.pop("trend"), "needs a `trend`"),
        (lambda r: r["trend"]["series"][0].update(claims=[None, None]), "at least one claim"),
    ],
)
def test_bad_trends_name_the_problem(change, needle):
    import copy

    raw = copy.deepcopy(RAW)
    change(raw)
    with pytest.raises(ValueError, match=needle):
        parse_sweep(raw, name="toy")


def test_a_gap_with_one_seed_a_side_is_drawn_without_an_interval(tmp_path, monkeypatch):
    """gap2 has one seed a side (no interval): it is still drawn, as a hollow marker."""
    from matplotlib.axes import Axes

    defn = parse_sweep(RAW, name="toy")
    atomic_write_json(
        tmp_path / SWEEP_FILE,
        {"name": "toy", "definition": RAW, "scale": "cpu", "seeds": [0, 1], "jobs": []},
    )
    for seed in (0, 1):
        for row, ap in zip(defn.rows, (0.30, 0.32, 0.36, 0.33), strict=True):
            if seed == 0 or row.label in ("a1", "b1"):
                _complete(tmp_path / row.id / f"seed{seed}", ap + 0.01 * seed)
    hollow = []
    plot = Axes.plot

    def recording_plot(self, *args, **kwargs):
        if kwargs.get("markerfacecolor") == "white":
            hollow.append(args[:2])
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    out = plot_claim_trend(tmp_path, tmp_path / "trend.png")
    assert out.is_file()
    assert len(hollow) == 2  # the point, and its legend entry
    (xs, ys) = hollow[0]
    assert xs == [2] and ys[0] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "xs, log2",
    [
        ([1, 2, 4, 8], True),  # schedule multiples
        ([1, 2, 8], True),  # powers of two, not evenly spaced
        ([0.005, 0.01, 0.02, 0.04], True),  # learning rates, doubling
        ([0.02, 0.005, 0.01], True),  # the grid's order does not matter
        ([0.005, 0.01, 0.03], False),
        ([1, 3], False),
        ([0.0, 1.0, 2.0], False),
        ([-1.0, -2.0], False),
    ],
)
def test_the_x_axis_is_log2_for_doublings(tmp_path, monkeypatch, xs, log2):
    """A geometric grid of x values (a doubled lr) is drawn on a log2 axis, other x linearly."""
    import copy

    from matplotlib.axes import Axes

    raw = copy.deepcopy(RAW)
    raw["rows"] = [
        {"label": f"{side}{i}", "overrides": [f"loss={loss}", f"train.epochs={i + 1}"]}
        for i in range(len(xs))
        for side, loss in (("a", "alrp"), ("b", "ap"))
    ]
    raw["claims"] = [
        {**RAW["claims"][0], "name": f"gap{i}", "a": {"row": f"a{i}"}, "b": {"row": f"b{i}"}}
        for i in range(len(xs))
    ]
    raw["trend"] = {
        "x": xs,
        "xlabel": "x",
        "series": [{"label": "a - b", "claims": [f"gap{i}" for i in range(len(xs))]}],
    }
    defn = parse_sweep(raw, name="toy")
    atomic_write_json(
        tmp_path / SWEEP_FILE,
        {"name": "toy", "definition": raw, "scale": "cpu", "seeds": [0, 1], "jobs": []},
    )
    for seed in (0, 1):
        for row in defn.rows:
            _complete(tmp_path / row.id / f"seed{seed}", 0.3 + 0.01 * seed)
    scales = []
    set_xscale = Axes.set_xscale

    def recording(self, value, **kwargs):
        scales.append(value)
        return set_xscale(self, value, **kwargs)

    monkeypatch.setattr(Axes, "set_xscale", recording)
    plot_claim_trend(tmp_path, tmp_path / "trend.png")
    assert (scales == ["log"]) is log2
