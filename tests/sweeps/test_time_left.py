from __future__ import annotations

import copy

from alrp_lab.sweeps.run_state import RunState
from alrp_lab.sweeps.time_left import TimeLeft, length_key, run_seconds, time_left

CONFIG = {
    "train": {"epochs": 112, "batch_size": 8, "lr": 0.02, "max_iters_per_epoch": None},
    "data": {"name": "shapes", "num_train": 1200, "root": "/cache/shapes-a"},
    "detector": {"name": "retinanet", "head_channels": 64},
    "backbone": {"name": "resnet18", "base_width": 32},
    "loss": {"name": "alrp", "self_balance": True},
}


def _with(**changes) -> dict:
    config = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


def _done(minutes: float, config: dict = CONFIG, **more) -> dict:
    end = f"2026-12-06T{10 + int(minutes // 60):02d}:{int(minutes % 60):02d}:00+00:00"
    return {
        "status": "completed",
        "started_at": "2026-12-06T10:00:00+00:00",
        "finished_at": end,
        "resumes": 0,
        "config": config,
        **more,
    }


def test_a_run_lasts_from_its_start_to_its_end_only_when_it_ran_in_one_go():
    assert run_seconds(_done(52)) == 52 * 60
    assert run_seconds(_done(52, resumes=1)) is None  # the span holds the pause
    assert run_seconds(_done(52, status="failed")) is None
    assert run_seconds(_done(52, finished_at=None)) is None
    assert run_seconds(_done(52, started_at="not a time")) is None


def test_the_length_key_follows_iterations_data_and_model_not_the_loss():
    same = [
        _with(loss__name="ap"),
        _with(train__lr=0.005),
        _with(data__root="/other/machine/cache"),
    ]
    assert {length_key(c) for c in same} == {length_key(CONFIG)}
    other = [
        _with(train__epochs=14),
        _with(train__batch_size=4),
        _with(data__num_train=2000),
        _with(backbone__base_width=64),
        _with(detector__head_channels=256),
    ]
    assert len({length_key(c) for c in other} | {length_key(CONFIG)}) == len(other) + 1


def test_each_pending_run_counts_the_median_of_its_kind():
    short = _with(train__epochs=14)
    completed = [_done(50), _done(52), _done(70), _done(10, short), _done(52, resumes=2)]
    pending = [
        (CONFIG, None),  # not started: the whole median, 52 min
        (CONFIG, RunState(epoch=28, epochs=112, resumes=True)),  # 3/4 left: 39 min
        (short, RunState(failed="killed")),  # 10 min
        (CONFIG, RunState(training_pid=7, epoch=100, epochs=112, left_s=300.0)),  # its own
        (CONFIG, RunState(training_pid=8)),  # training, no estimate from its log yet
        (_with(train__epochs=3), None),  # no completed run of its length
    ]
    got = time_left(pending, completed)
    assert got == TimeLeft(seconds=(52 + 39 + 10 + 5) * 60, judged=4, unjudged=2, basis=4)
    assert got.describe() == (
        "about 1.8 h of run time left in 4 run(s) one after another, by the median time of "
        "4 completed run(s) of the same length here; 2 more with none to go by"
    )
    assert "left in 4 run(s) one after another (about 53 min at 2 at a time)" in got.describe(2)


def test_runs_training_now_are_judged_by_their_logs_alone():
    got = time_left([(CONFIG, RunState(training_pid=7, left_s=600.0))], [])
    assert got == TimeLeft(600.0, judged=1, unjudged=0, basis=0)
    assert got.describe().endswith("one after another, by the logs of the runs training now")


def test_without_a_finished_run_of_its_kind_nothing_is_guessed():
    got = time_left([(CONFIG, None)], [_done(30, resumes=1)])
    assert got == TimeLeft(0.0, judged=0, unjudged=1, basis=0)
    assert got.describe().startswith("no completed run of the same length")
