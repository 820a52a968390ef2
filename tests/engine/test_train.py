"""End-to-end runs of the training engine on the built-in data, through the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from alrp_lab.cli import main
from alrp_lab.data.shapes import build_shapes_dataset
from alrp_lab.tracking.code_digest import code_record
from alrp_lab.tracking.results import read_metrics, read_results
from alrp_lab.utils.io import atomic_write_json
from tests.gloo import free_port

METRIC_KEYS = {"AP", "AP50", "AP75", "AP90", "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "rho"}


def _run(run_dir: Path, *overrides: str) -> int:
    return main(["run", "debug=smoke", f"hydra.run.dir={run_dir}", *overrides])


def test_smoke_run_writes_a_completed_results_file(tmp_path):
    assert _run(tmp_path / "run") == 0
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    assert METRIC_KEYS <= set(results["metrics"])
    assert results["config"]["loss"]["name"] == "alrp"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    records = read_metrics(tmp_path / "run")
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    # aLRP's Eloc diagnostics are logged with every record that had positives.
    logged = [r for r in records if r["num_pos"] > 0]
    assert logged and all(r["eloc_mean"] >= 0 and 0 <= r["eloc_over_one"] <= 1 for r in logged)
    # aLRP keeps the gradient totals of positives and negatives equal (Theorem 2).
    rows = (tmp_path / "run" / "grad_balance.csv").read_text().splitlines()[1:]
    assert rows and all(abs(float(r.split(",")[2]) - 1.0) < 1e-4 for r in rows)
    # results.json keeps the csv's range, for copies that keep only results.json.
    assert results["extra"]["grad_balance"]["count"] == len(rows)


@pytest.mark.parametrize(
    "overrides",
    [
        ("loss=ap", "box_error=smooth_l1", "assigner=max_iou"),
        ("loss=focal", "box_error=giou"),
        ("loss=ce", "box_error=l1"),
        ("loss=ap", "box_error=iou", "loss.self_balance=true"),
        ("loss.self_balance=false", "loss.wr=10", "box_error=iou"),
        ("detector=foveabox",),
        ("detector=foveabox", "loss=focal", "box_error=smooth_l1", "box_error.beta=0.11"),
        ("detector=faster_rcnn", "assigner=max_iou", "train.lr=0.004"),
        ("detector=faster_rcnn", "loss=ce", "box_error=l1"),
        ("data=textures", "loss=ap", "box_error=smooth_l1"),
    ],
)
def test_every_loss_choice_runs(tmp_path, overrides):
    assert _run(tmp_path / "run", *overrides) == 0
    assert read_results(tmp_path / "run")["status"] == "completed"


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return state["model"]


def _spatial(weight: torch.Tensor) -> bool:
    """A 4-D tensor whose two layouts differ (kernels wider than 1 x 1)."""
    return weight.dim() == 4 and weight.shape[-1] > 1


def _is_channels_last(weight: torch.Tensor) -> bool:
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _assert_same_run(straight_dir: Path, resumed_dir: Path) -> None:
    """Bitwise-equal final weights and equal metrics."""
    straight, resumed = _weights(straight_dir), _weights(resumed_dir)
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    a = read_results(straight_dir)["metrics"]
    b = read_results(resumed_dir)["metrics"]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, channels_last):
    common = ("train.max_iters_per_epoch=2", "data.augment=ssd")
    common += (f"train.channels_last={str(channels_last).lower()}",)
    assert _run(tmp_path / "straight", "train.epochs=2", *common) == 0
    assert _run(tmp_path / "resumed", "train.epochs=1", *common) == 0
    assert _run(tmp_path / "resumed", "train.epochs=2", "train.resume=true", *common) == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed")]
    assert steps == sorted(set(steps)) and steps[-1] == 3
    # The layout the run asked for is the one its weights kept.
    convs = [w for w in _weights(tmp_path / "straight").values() if _spatial(w)]
    assert convs and all(_is_channels_last(w) == channels_last for w in convs)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    assert _run(tmp_path / "run") == 0
    before = _snapshot(tmp_path / "run")
    code = _run(tmp_path / "run", "train.resume=true", "train.epochs=2", "backbone.base_width=8")
    assert code != 0
    assert "train.resume=false" in capsys.readouterr().err
    # The refused resume leaves the folder byte for byte as it was, .hydra/ included.
    after = _snapshot(tmp_path / "run")
    assert after == before


def test_real_coco_layout(tmp_path):
    """data=coco reads the standard folder layout (made here from the built-in set)."""
    root, splits = _coco_copy(tmp_path, num_train=8, num_val=4)
    code = _run(
        tmp_path / "run",
        "data=coco",
        f"data.root={root}",
        "data.train_size=64",
        "data.test_size=64",
        "data.num_workers=0",
    )
    assert code == 0
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    detections = json.loads((tmp_path / "run" / "detections_val.json").read_text())
    categories = {c["id"] for c in json.loads(splits.val_ann.read_text())["categories"]}
    assert {d["category_id"] for d in detections} <= categories


def test_missing_coco_folder_is_one_clear_error(tmp_path, capsys):
    code = _run(tmp_path / "run", "data=coco", f"data.root={tmp_path / 'nowhere'}")
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(tmp_path, monkeypatch):
    """train.nproc_per_node=2 launches torchrun (gloo on CPU); the ranks share one folder."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _run(tmp_path / "run", "train.nproc_per_node=2", "train.max_iters_per_epoch=null") == 0
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed"
    # 16 training images, batch 4 per process, 2 processes: 2 iterations per epoch.
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1]
    assert METRIC_KEYS <= set(results["metrics"])


@pytest.mark.slow
def test_the_worker_composes_from_overrides_under_a_plain_torchrun(tmp_path, monkeypatch):
    """The multi-node recipe on one node: torchrun with a c10d rendezvous, the overrides
    given to the worker itself."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    command += ["--nproc_per_node", "2", "--rdzv_backend", "c10d"]
    command += ["--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "alrp_lab.engine.worker"]
    command += [str(tmp_path / "run"), "debug=smoke", "loss=ap", "box_error=smooth_l1"]
    command += ["train.nproc_per_node=2", "train.nnodes=1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        # Name the crash frame and any C++ exception, which the stderr tail leaves out.
        from alrp_lab.engine.launch import crash_dump_path, root_cause

        paths = {rank: crash_dump_path(tmp_path / "run", rank) for rank in (0, 1)}
        dumps = {rank: path.read_text() for rank, path in paths.items() if path.is_file()}
        pytest.fail(f"{root_cause(done.stderr, dumps)}\n{done.stderr[-2000:]}")
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["config"]["loss"]["name"] == "ap"
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1]


@pytest.mark.slow
def test_a_sweep_job_with_two_processes_starts_torchrun(tmp_path, monkeypatch):
    from alrp_lab.sweeps.runner import run_job_default

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    overrides = ["debug=smoke", "train.nproc_per_node=2", "train.max_iters_per_epoch=null"]
    run_job_default(overrides, tmp_path / "run")
    assert read_results(tmp_path / "run")["status"] == "completed"
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1]
    assert (tmp_path / "run" / "torchrun.log").is_file()


@pytest.mark.parametrize(
    "nproc, nnodes, world_size, ok",
    [(1, 1, 1, True), (4, 2, 8, True), (1, 1, 2, False), (4, 1, 8, False), (4, 2, 4, False)],
)
def test_the_run_refuses_a_world_size_the_config_does_not_state(nproc, nnodes, world_size, ok):
    """torchrun --nnodes 2 --nproc_per_node 4 with the config's defaults (1 x 1) would scale
    the lr for one process: the run stops and names the overrides."""
    from omegaconf import OmegaConf

    from alrp_lab.engine.train import check_world_size
    from alrp_lab.errors import ConfigError

    cfg = OmegaConf.create({"train": {"nproc_per_node": nproc, "nnodes": nnodes}})
    if ok:
        check_world_size(cfg, world_size)
    else:
        with pytest.raises(ConfigError, match="train.nproc_per_node=4 train.nnodes=2"):
            check_world_size(cfg, world_size)


def _worker_pids(run_dir: Path, local_rank: int) -> list[int]:
    """Processes of the torchrun workers of ``run_dir`` with that LOCAL_RANK (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"alrp_lab.engine.worker" not in cmdline or str(run_dir).encode() not in cmdline:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environ:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks in /proc")
def test_a_rank_that_dies_ends_the_run_within_a_minute_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "alrp_lab.cli", "run", "debug=smoke"]
    command += [f"hydra.run.dir={run_dir}", "train.nproc_per_node=2", "train.epochs=500"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        # Both ranks are in the training loop once rank 0 has logged an iteration.
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.jsonl").is_file() or not _worker_pids(run_dir, 1):
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        (victim,) = _worker_pids(run_dir, 1)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "rank 1 died" in lines[0] and "SIGKILL" in lines[0] and "torchrun.log" in lines[0]
    assert not _worker_pids(run_dir, 0)


def test_eval_every_logs_interim_metrics(tmp_path):
    assert _run(tmp_path / "run", "train.epochs=2", "train.eval_every=1") == 0
    interim = [r for r in read_metrics(tmp_path / "run") if "val/AP50" in r]
    assert len(interim) == 1 and interim[0]["epoch"] == 1


def test_a_diverging_run_fails_with_a_clear_message(tmp_path, capsys):
    assert _run(tmp_path / "run", "train.lr=1e9", "train.warmup_iters=0") == 2
    err = capsys.readouterr().err
    assert "loss became nan" in err and "train.lr" in err
    results = read_results(tmp_path / "run")
    assert results["status"] == "failed" and "NonFiniteLossError" in results["error"]


def test_resume_cuts_grad_balance_back_to_the_checkpoint(tmp_path):
    common = ("train.max_iters_per_epoch=2", "train.grad_balance=true")
    assert _run(tmp_path / "straight", "train.epochs=2", *common) == 0
    assert _run(tmp_path / "resumed", "train.epochs=1", *common) == 0
    # Lines the stopped run wrote after its checkpoint (iterations 2 and 3 of epoch 1).
    with (tmp_path / "resumed" / "grad_balance.csv").open("a") as fh:
        fh.write("2,1,5.0\n3,1,5.0\n")
    assert _run(tmp_path / "resumed", "train.epochs=2", "train.resume=true", *common) == 0
    straight = (tmp_path / "straight" / "grad_balance.csv").read_text()
    assert (tmp_path / "resumed" / "grad_balance.csv").read_text() == straight
    assert [int(line.split(",")[0]) for line in straight.splitlines()[1:]] == [0, 1, 2, 3]
    # The range recorded in results.json is the cut file's (the 5.0 lines are gone) and
    # what the report reads from the csv.
    ratios = [float(line.split(",")[2]) for line in straight.splitlines()[1:]]
    recorded = read_results(tmp_path / "resumed")["extra"]["grad_balance"]
    assert recorded == {"min": min(ratios), "max": max(ratios), "count": 4}
    assert recorded == read_results(tmp_path / "straight")["extra"]["grad_balance"]


def test_an_attempt_without_the_csv_records_no_range_for_the_whole_run(tmp_path):
    """results.json carries an earlier attempt's extra over; a resume that writes no csv
    must not leave the first attempt's range standing as the whole run's."""
    common = ("train.max_iters_per_epoch=2",)
    assert _run(tmp_path / "run", "train.epochs=1", "train.grad_balance=true", *common) == 0
    assert read_results(tmp_path / "run")["extra"]["grad_balance"]["count"] == 2
    resume = ("train.epochs=2", "train.resume=true", "train.grad_balance=false")
    assert _run(tmp_path / "run", *resume, *common) == 0
    assert read_results(tmp_path / "run")["extra"]["grad_balance"] is None


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_completed_run_folder_is_never_replaced_without_being_asked(tmp_path, capsys):
    assert _run(tmp_path / "run") == 0
    before = _snapshot(tmp_path / "run")
    capsys.readouterr()
    assert _run(tmp_path / "run", "loss=ap") == 2
    err = capsys.readouterr().err.strip()
    assert "holds a completed run" in err and "train.resume=true" in err
    assert len(err.splitlines()) == 1
    assert _snapshot(tmp_path / "run") == before, "the folder is left byte for byte"


def test_a_resume_with_another_config_is_named_in_a_warning(tmp_path, caplog):
    from omegaconf import OmegaConf

    from alrp_lab.config.compose import compose_config
    from alrp_lab.engine.train import _resume_changes

    def resolved(*overrides):
        return OmegaConf.to_container(compose_config(list(overrides)), resolve=True)

    atomic_write_json(tmp_path / "results.json", {"status": "running", "config": resolved()})
    # More epochs (extending a run) are recorded but not warned about; a logger is no change.
    epochs = resolved()["train"]["epochs"]
    assert _resume_changes(tmp_path, resolved("train.epochs=30", "logger=none")) == [
        f"train.epochs: recorded {epochs}, now 30"
    ]
    assert not caplog.records
    assert _resume_changes(tmp_path, resolved("train.lr=0.001", "train.momentum=0.8")) == [
        "train.lr: recorded 0.005, now 0.001",
        "train.momentum: recorded 0.9, now 0.8",
    ]
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "train.lr: recorded 0.005, now 0.001; train.momentum: recorded 0.9" in record.message
    # A sweep's record of a job that failed before training holds only its overrides: no
    # config of a run to compare with, so nothing is said to change.
    atomic_write_json(tmp_path / "results.json", {"status": "failed", "config": {"overrides": []}})
    assert _resume_changes(tmp_path, resolved("train.lr=0.001")) == []
    # Other code than the earlier attempts': warned about, whatever the config says.
    caplog.clear()
    now = code_record()
    other = {**now, "digests": {**now["digests"], "ops": "0"}}
    atomic_write_json(
        tmp_path / "results.json",
        {"status": "running", "config": resolved(), "attempts": [{"code": other}]},
    )
    assert _resume_changes(tmp_path, resolved()) == []
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "other code" in record.message
    assert "(in ops)" in record.message


def test_a_resumed_run_logs_the_changed_key(tmp_path):
    common = ("train.max_iters_per_epoch=2",)
    assert _run(tmp_path / "run", *common, "train.epochs=1") == 0
    assert _run(tmp_path / "run", *common, "train.epochs=2", "train.resume=true") == 0
    assert "another config" not in (tmp_path / "run" / "train.log").read_text()
    assert (
        _run(tmp_path / "run", *common, "train.epochs=3", "train.resume=true", "train.lr=1e-4") == 0
    )
    assert "(train.lr: recorded" in (tmp_path / "run" / "train.log").read_text()
    # The record says the same: one attempt each, the third trained under another lr.
    attempts = read_results(tmp_path / "run")["attempts"]
    assert [a["from_step"] for a in attempts] == [0, 2, 4]
    assert [a["changed"] for a in attempts[:2]] == [[], ["train.epochs: recorded 1, now 2"]]
    epochs, lr = attempts[2]["changed"]  # the lr before is the rule's for this batch
    assert epochs == "train.epochs: recorded 2, now 3"
    assert lr.startswith("train.lr: recorded ") and lr.endswith(", now 0.0001")


def test_the_engine_refuses_a_completed_folder_too(tmp_path):
    from alrp_lab.engine.train import RunFolderError, check_run_folder

    (tmp_path / "results.json").write_text('{"status": "completed", "metrics": {}}')
    with pytest.raises(RunFolderError, match="hydra.run.dir"):
        check_run_folder(tmp_path, resume=False)
    check_run_folder(tmp_path, resume=True)  # continuing it is the user's choice


def test_an_empty_training_set_is_one_clear_error(tmp_path, capsys):
    root, _ = _coco_copy(tmp_path)
    ann_file = root / "annotations" / "instances_train2017.json"
    empty = json.loads(ann_file.read_text())
    empty["images"], empty["annotations"] = [], []
    ann_file.write_text(json.dumps(empty))
    code = _run(tmp_path / "run", *_COCO_RUN, f"data.root={root}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the training split" in err and "holds no images" in err
    assert len(err.splitlines()) == 1


def _coco_copy(tmp_path: Path, num_train: int = 4, num_val: int = 2) -> tuple[Path, Any]:
    """The standard COCO folder layout, made from a small built-in set."""
    splits = build_shapes_dataset(
        tmp_path / "src",
        seed=3,
        num_train=num_train,
        num_val=num_val,
        image_size=64,
        num_classes=3,
    )
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(splits.train_images, root / "train2017")
    shutil.copytree(splits.val_images, root / "val2017")
    shutil.copy(splits.train_ann, root / "annotations" / "instances_train2017.json")
    shutil.copy(splits.val_ann, root / "annotations" / "instances_val2017.json")
    return root, splits


_COCO_RUN = ("data=coco", "data.num_workers=0", "data.train_size=64", "data.test_size=64")


def test_a_corrupt_validation_image_stops_the_run_before_training(tmp_path, capsys):
    root, _ = _coco_copy(tmp_path)
    victim = sorted((root / "val2017").iterdir())[0]
    victim.write_bytes(b"not a png at all")
    code = _run(tmp_path / "run", *_COCO_RUN, f"data.root={root}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "1 of 2 images" in err and victim.name in err
    assert not (tmp_path / "run" / "checkpoints").exists(), "no training happened"


def test_invalid_boxes_are_reported_once_and_dropped(tmp_path):
    root, _ = _coco_copy(tmp_path)
    ann_file = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann_file.read_text())
    for ann, bad in zip(
        data["annotations"], ([1, 1, 0, 5], [1, 1, -3, 5], [1, 1, 5, math.nan]), strict=False
    ):
        ann["bbox"] = bad
    ann_file.write_text(json.dumps(data))
    assert _run(tmp_path / "run", *_COCO_RUN, f"data.root={root}") == 0
    log = (tmp_path / "run" / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "boxes with zero" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        "training split: 3 boxes with zero, negative or non-finite width or height are "
        "dropped, as COCO's tools do"
    )


@pytest.mark.parametrize("clip", ["null", "35"])
def test_a_non_finite_gradient_stops_the_run_before_the_step(tmp_path, capsys, monkeypatch, clip):
    from alrp_lab.engine import train as train_module

    # The norm comes from gradient_norm without clipping, from clip_grad_norm_ with it.
    owner, name = (
        (train_module, "gradient_norm") if clip == "null" else (torch.nn.utils, "clip_grad_norm_")
    )
    real, calls = getattr(owner, name), []

    def norm_that_fails_at_iteration_2(parameters, *args, **kwargs):
        calls.append(1)
        value = real(parameters, *args, **kwargs)
        return value * float("inf") if len(calls) == 3 else value

    monkeypatch.setattr(owner, name, norm_that_fails_at_iteration_2)
    code = _run(
        tmp_path / "run", "train.epochs=2", "train.max_iters_per_epoch=2", f"train.grad_clip={clip}"
    )
    err = capsys.readouterr().err
    assert len(calls) == 3, "the patched norm is the one the loop reads"
    assert code == 2 and "gradient became non-finite at epoch 2, iteration 2" in err
    assert "keeps epoch 1, with finite weights" in err and "repeats the same steps" in err
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert read_results(tmp_path / "run")["status"] == "failed"


def test_the_log_records_the_gradient_norm_before_clipping(tmp_path):
    common = ("train.max_iters_per_epoch=3", "train.log_every=1")
    assert _run(tmp_path / "clipped", *common, "train.grad_clip=1e-6") == 0
    assert _run(tmp_path / "free", *common, "train.grad_clip=null") == 0
    clipped = [r["grad_norm"] for r in read_metrics(tmp_path / "clipped")]
    free = [r["grad_norm"] for r in read_metrics(tmp_path / "free")]
    # The first step starts from the same weights: the same norm, far above the clip.
    assert len(clipped) == 3 and clipped[0] == free[0] > 1e-3
    # Clipped to 1e-6, that step hardly moved the weights: the next norms differ.
    assert clipped[1] != free[1]


def test_sb_period_re_estimates_sb_every_n_iterations(tmp_path):
    common = ("train.max_iters_per_epoch=3", "train.epochs=2", "loss.sb_period=2")
    assert _run(tmp_path / "run", *common) == 0
    weights = [r["loc_weight"] for r in read_metrics(tmp_path / "run") if "loc_weight" in r]
    assert len(weights) == 6 and weights[0] == weights[1] == 50.0
    # New values after iterations 2 and 4, none at the epoch's end (after iteration 3).
    assert weights[2] != weights[1] and weights[3] == weights[2] and weights[4] != weights[3]
    assert weights[5] == weights[4]


def test_resume_is_exact_when_an_sb_period_straddles_the_checkpoint(tmp_path):
    common = ("train.max_iters_per_epoch=3", "loss.sb_period=2")
    assert _run(tmp_path / "straight", "train.epochs=2", *common) == 0
    assert _run(tmp_path / "resumed", "train.epochs=1", *common) == 0
    assert _run(tmp_path / "resumed", "train.epochs=2", "train.resume=true", *common) == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_sb_start_keeps_sb_init_until_a_period_after_it(tmp_path):
    common = ("train.max_iters_per_epoch=3", "train.epochs=3")
    assert _run(tmp_path / "run", *common, "loss.sb_start=3") == 0
    weights = [r["loc_weight"] for r in read_metrics(tmp_path / "run") if "loc_weight" in r]
    # Epoch 1 (iterations 0-2) records nothing, so SB stays 50 through epoch 2; the estimate
    # from epoch 2's losses (iterations 3-5) is the first change, seen in epoch 3.
    assert weights[:6] == [50.0] * 6 and weights[6] != 50.0
    assert _run(tmp_path / "ref", *common) == 0
    ref = [r["loc_weight"] for r in read_metrics(tmp_path / "ref") if "loc_weight" in r]
    assert ref[3] != 50.0, "without sb_start the first epoch's estimate is used"


def test_a_resume_in_the_other_layout_moves_the_momentum_too(tmp_path):
    """A contiguous run resumed with train.channels_last=true: weights and SGD momentum both
    end channels-last (a checkpoint loads its momentum in the layout it was saved in)."""
    common = ("train.max_iters_per_epoch=2",)
    assert _run(tmp_path / "run", "train.epochs=1", *common) == 0
    args = ("train.epochs=2", "train.resume=true", "train.channels_last=true", *common)
    assert _run(tmp_path / "run", *args) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    buffers = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    convs = [b for b in buffers if _spatial(b)]
    assert convs and all(_is_channels_last(b) for b in convs)
