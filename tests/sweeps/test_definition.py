from __future__ import annotations

import copy
import re

import pytest
import yaml

from alrp_lab.sweeps.definition import (
    SWEEPS_DIR,
    available_sweeps,
    default_root,
    load_sweep,
    parse_sweep,
    slugify,
)

GRID = {
    "title": "Grid",
    "kind": "grid",
    "metric": "AP",
    "corner": "wr",
    "base": ["loss=alrp"],
    "scales": {"cpu": {"overrides": ["train.epochs=1"]}, "paper": {"requires": ["data.root"]}},
    "rows": [
        {"label": "IoU", "overrides": ["box_error=iou"], "paper": {1: 36.9, "SB": 38.7}},
        {
            "label": "GIoU (x)",
            "overrides": ["box_error=giou"],
            "scale_overrides": {"paper": ["train.lr=0.1"]},
        },
    ],
    "columns": [
        {"label": "1", "id": "wr1", "overrides": ["loss.wr=1"]},
        {"label": "SB", "overrides": ["loss.self_balance=true"]},
    ],
}

METRICS = {
    "title": "Metrics",
    "kind": "metrics",
    "metrics": ["rho", "AP"],
    "scales": {"cpu": None},
    "rows": [
        {"label": "aLRP Loss", "overrides": ["loss=alrp"], "paper": {"rho": 0.48, "AP": 38.7}},
        {"label": "Upper Bound", "same_job_as": "aLRP Loss", "metric_prefix": "upper_"},
    ],
}


def test_slugify_makes_filesystem_safe_ids():
    assert slugify("aLRP (GIoU) + SB + ATSS") == "alrp-giou-sb-atss"
    assert slugify("Cross Entropy + L1") == "cross-entropy-l1"
    assert slugify("  1.5 ") == "1.5"


def test_grid_definition_parses_rows_columns_and_ids():
    defn = parse_sweep(copy.deepcopy(GRID), name="g")
    assert defn.kind == "grid" and defn.metrics == ("AP",) and defn.corner == "wr"
    assert [r.id for r in defn.rows] == ["iou", "giou-x"]
    assert [c.id for c in defn.columns] == ["wr1", "sb"]
    assert defn.table_columns == ("1", "SB")
    # YAML keys like 1 are read as column labels, numbers as floats.
    assert defn.rows[0].paper == {"1": 36.9, "SB": 38.7}
    assert defn.rows[1].scale_overrides == {"paper": ("train.lr=0.1",)}
    assert defn.job_id(defn.rows[1], defn.columns[0]) == "giou-x__wr1"
    assert defn.cell_metric(defn.rows[0], "SB") == "AP"
    assert defn.scales["paper"].requires == ("data.root",)
    assert defn.scales["cpu"].overrides == ("train.epochs=1",)


def test_metrics_rows_can_share_a_job_and_read_prefixed_metrics():
    defn = parse_sweep(copy.deepcopy(METRICS), name="m")
    upper = defn.rows[1]
    assert defn.job_row(upper) is defn.rows[0]
    assert defn.job_id(upper) == "alrp-loss"
    assert defn.cell_metric(upper, "AP") == "upper_AP"
    assert defn.cell_metric(defn.rows[0], "rho") == "rho"


def _broken(base: dict, edit) -> dict:
    raw = copy.deepcopy(base)
    edit(raw)
    return raw


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_broken(GRID, lambda r: r.update(colums=[])), "unknown key 'colums'"),
        (_broken(GRID, lambda r: r.update(kind="table")), "kind must be one of"),
        (_broken(GRID, lambda r: r.pop("columns")), "non-empty list `columns`"),
        (_broken(GRID, lambda r: r["rows"][0]["paper"].update({"3": 1.0})), "'3', which is not"),
        (_broken(GRID, lambda r: r["rows"][0]["paper"].update({"1": "x"})), "number or null"),
        (_broken(GRID, lambda r: r["rows"][1].update(label="IoU")), "duplicate row label"),
        (_broken(GRID, lambda r: r["columns"][0].update(id="W R")), "not filesystem-safe"),
        (_broken(GRID, lambda r: r["rows"][0].update(overrides=["box_error"])), "key=value"),
        (_broken(GRID, lambda r: r["scales"].pop("cpu")), "at least `cpu`"),
        (
            _broken(GRID, lambda r: r.update(base=["+hydra.callbacks.x._target_=builtins.open"])),
            "may not set hydra",
        ),
        (
            _broken(GRID, lambda r: r["rows"][0].update(overrides=["loss._target_=os.system"])),
            "may not set hydra.* or _target_",
        ),
        (
            _broken(GRID, lambda r: r["scales"]["cpu"].update(overrides=["hydra/launcher=x"])),
            "may not set hydra",
        ),
        (
            _broken(GRID, lambda r: r["rows"][1].update(scale_overrides={"gpu": ["a=1"]})),
            "unknown scale 'gpu'",
        ),
        (_broken(GRID, lambda r: r["rows"][1].update(same_job_as="IoU")), "only for kind: metr"),
        (_broken(METRICS, lambda r: r["rows"][1].update(same_job_as="Nope")), "earlier row"),
        (_broken(METRICS, lambda r: r["rows"][1].update(overrides=["a=1"])), "runs no job"),
        (_broken(METRICS, lambda r: r.update(metrics=[])), "non-empty list `metrics`"),
        (_broken(METRICS, lambda r: r.update(metric="AP")), "kind: grid"),
        (_broken(METRICS, lambda r: r.update(figure="bars")), "figure must be"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_definitions_name_the_problem(raw, needle):
    with pytest.raises(
        ValueError,
        match="sweep broken: .*" + needle.replace("`", ".").replace("(", r"\(").replace(")", r"\)"),
    ):
        parse_sweep(raw, name="broken")


def test_load_by_path_and_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(GRID))
    defn = load_sweep(path)
    assert defn.name == "mine" and defn.source == path and defn.raw["title"] == "Grid"
    assert load_sweep("table3").source == SWEEPS_DIR / "table3.yaml"


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown sweep 'tabel3': choose one of .*table3"):
        load_sweep("tabel3")


def test_missing_path_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_sweep(bad)


def test_available_sweeps_and_default_root(tmp_path):
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "a.yaml").write_text("")
    (tmp_path / "README.md").write_text("")
    assert available_sweeps(tmp_path) == ["a", "b"]
    assert str(default_root("table3")) == "outputs/sweeps/table3"
    assert str(default_root("table3", "paper")) == "outputs/sweeps/table3-paper"


def _claim(**fields):
    claim = {
        "name": "c",
        "paper": "words",
        "a": {"row": "IoU", "column": "1"},
        "b": {"row": "IoU", "column": "SB"},
    }
    claim.update(fields)
    return dict(GRID, claims=[claim])


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_claim(a={"row": "nope", "column": "1"}), "no row 'nope'"),
        (_claim(a={"row": "IoU", "column": "7"}), "no column '7'"),
        (_claim(a={"row": "IoU"}), "needs column"),
        (_claim(expect=">="), "expect must be"),
        (_claim(test="median"), "test must be one of"),
        (_claim(b=None), "needs side b"),
        (_claim(test="spread", b=None), "at least two cells"),
        (_claim(a={"value": 1.0}), "side a must name cells"),
        (_claim(name="Bad Name"), "must match"),
        (dict(GRID, seeds=0), "seeds must be a whole number"),
    ],
)
def test_bad_claims_name_the_problem(raw, needle):
    if raw.get("claims") and raw["claims"][0].get("b", 1) is None:
        raw["claims"][0].pop("b")
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_sweep(raw, name="broken")


def test_a_claim_parses_into_sides():
    defn = parse_sweep(_claim(b={"row": "IoU", "columns": ["1", "SB"]}, margin=-0.5), name="t")
    claim = defn.claims[0]
    assert claim.a.cells[0].row == "IoU" and len(claim.b.cells) == 2 and claim.margin == -0.5
    assert (claim.test, claim.expect, claim.metric) == ("difference", ">", "AP")
