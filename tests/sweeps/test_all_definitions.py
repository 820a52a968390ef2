"""Every sweep definition in sweeps/ loads, expands and composes against conf/."""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alrp_lab.config import validate_config
from alrp_lab.sweeps.definition import CONF_DIR, available_sweeps, load_sweep
from alrp_lab.sweeps.runner import expand_jobs

JOB_COUNTS = {
    "table2": 5,
    "table3": 16,
    "table4": 4,
    "table5": 1,
    "table7": 3,
    "table8": 3,
    "tableA12": 6,
    "figure4": 3,
    "figureA7": 2,
}
# Studies of this tool's own (cpu scale only, no paper numbers per row): job counts.
STUDIES = {"regime": 49, "default": 13, "transfer": 6, "iou_breakdown": 5}
# Studies of this tool's own stand-ins (the built-in backbone), with no paper number to test.
OWN_STUDIES = {"transfer", "iou_breakdown"}
PAPER_USER = ["data.root=/data/coco", "backbone.weights=/weights/resnet50.pth"]


def test_there_is_one_definition_per_paper_table_and_figure():
    assert set(available_sweeps()) == set(JOB_COUNTS) | set(STUDIES)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_loads_and_expands(name):
    jobs = expand_jobs(load_sweep(name), "cpu", seeds=1)
    assert len(jobs) == STUDIES[name]
    assert len({j.id for j in jobs}) == len(jobs)


@pytest.mark.parametrize("name", sorted(JOB_COUNTS))
def test_definition_loads_and_expands(name):
    defn = load_sweep(name)
    jobs = expand_jobs(defn, "cpu", seeds=1)
    assert len(jobs) == JOB_COUNTS[name]
    assert len({j.id for j in jobs}) == len(jobs)
    assert len(expand_jobs(defn, "paper", PAPER_USER, seeds=1)) == len(jobs)
    # Every seed of every job has its own run folder.
    seeded = expand_jobs(defn, "cpu")
    assert len(seeded) == len(jobs) * defn.seeds
    assert len({j.run_id for j in seeded}) == len(seeded)
    # The paper scale cannot silently train on random weights or without COCO.
    with pytest.raises(ValueError, match="backbone.weights"):
        expand_jobs(defn, "paper", ["data.root=/data/coco"])
    # Every row shows the paper's numbers, except where the paper prints none.
    for row in defn.rows:
        if row.id != "alrp-zero-target":
            assert row.paper, f"{name}: row {row.label} has no paper numbers"


@pytest.mark.parametrize("name", sorted(JOB_COUNTS) + sorted(STUDIES))
def test_every_job_composes_and_validates(name):
    defn = load_sweep(name)
    # Every cpu job, and the first job at the paper scale (its rows are the cpu rows).
    jobs = [j.overrides for j in expand_jobs(defn, "cpu")]
    if name not in STUDIES:
        jobs.append(expand_jobs(defn, "paper", PAPER_USER)[0].overrides)
    # A choice or key missing from conf/ or the schema fails here: there is no skip.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for overrides in jobs:
            cfg = validate_config(compose("config", overrides=overrides))
            final = dict(item.split("=", 1) for item in overrides)  # the last one wins
            for key, value in final.items():
                if key == "train.lr" and value == "null":
                    assert cfg.train.lr > 0, "the lr rule fills train.lr"
                elif "." in key:
                    got = OmegaConf.select(cfg, key)
                    got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
                    assert got == yaml.safe_load(value), (name, key, value)


@pytest.mark.parametrize("name", sorted(JOB_COUNTS) + sorted(STUDIES))
def test_every_definition_states_claims_that_hold_on_the_papers_own_numbers(name):
    from alrp_lab.report.claims import evaluate_claims

    defn = load_sweep(name)
    assert defn.claims, f"{name} tests no claim of the paper"
    assert defn.seeds >= 3, "claims need seeds: at least 3 per job"
    for result in evaluate_claims(defn, lambda cell: []):
        claim = result.claim
        if name in OWN_STUDIES:
            assert result.paper is None, f"{name}/{claim.name}: the paper prints no such number"
            continue
        if claim.test == "diverges":
            continue
        assert result.paper is not None, f"{name}/{claim.name}: no paper number"
        if claim.expect == ">":
            assert result.paper > claim.margin, f"{name}/{claim.name}: {result.paper}"
        else:
            assert result.paper < claim.margin, f"{name}/{claim.name}: {result.paper}"


@pytest.mark.parametrize("name", sorted(JOB_COUNTS))
def test_the_paper_scale_keeps_the_authors_recipe(name):
    # conf/scale/paper.yaml: whatever the default experiment's cpu recipe, a paper-scale job
    # records SB from the first iteration, clips nothing, and uses the authors' lr (a row's
    # own number, or the rule at factor 1).
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in expand_jobs(load_sweep(name), "paper", PAPER_USER, seeds=1):
            cfg = validate_config(compose("config", overrides=job.overrides))
            assert cfg.data.name == "coco" and cfg.backbone.depth == 50, job.id
            assert cfg.loss.sb_start is None and cfg.train.grad_clip is None, job.id
            assert cfg.train.lr_scale == 1.0 and cfg.train.batch_size == 32, job.id
            # The lr is the row's own number, one the authors (or mmdetection) give.
            assert any(o.startswith("train.lr=") for o in job.overrides), job.id
            assert cfg.train.lr in {0.002, 0.008, 0.012, 0.02, 0.04}, (job.id, cfg.train.lr)
