import logging
import sys
import types

import pytest

from alrp_lab.tracking.wandb_run import WandbRun, resolve_mode


class FakeRun:
    def __init__(self, calls, fail_on=None):
        self.calls = calls
        self.fail_on = fail_on
        self.summary = {}

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if name == self.fail_on:
            raise OSError("[Errno 28] No space left on device")

    def log(self, data, step=None):
        self._record("log", data, step=step)

    def finish(self, exit_code=None):
        self._record("finish", exit_code=exit_code)


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records calls; ``.fail_on`` makes one method raise."""
    module = types.ModuleType("wandb")
    module.calls = []
    module.fail_on = None

    def init(**kwargs):
        module.calls.append(("init", (), kwargs))
        module.run = FakeRun(module.calls, module.fail_on)
        return module.run

    module.init = init
    module.Settings = lambda **kwargs: ("Settings", kwargs)
    module.Table = lambda columns, data: ("Table", columns, data)
    module.Image = lambda path: ("Image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # `make test` sets it to disabled
    return module


def _names(calls):
    return [name for name, _, _ in calls]


def test_calls_reach_wandb_on_rank0(fake_wandb, tmp_path):
    run = WandbRun(
        mode="offline",
        project="p",
        group="table2",
        job_type="train",
        tags=("a", "b"),
        config={"lr": 0.1},
        dir=tmp_path / "w",
        name="run0",
    )
    assert run.active
    _, _, init_kwargs = fake_wandb.calls[0]
    assert init_kwargs["mode"] == "offline" and init_kwargs["tags"] == ["a", "b"]
    # A short init timeout, so online mode without a network does not stall training.
    assert init_kwargs["settings"] == ("Settings", {"init_timeout": 15.0})
    assert init_kwargs["dir"] == str(tmp_path / "w") and (tmp_path / "w").is_dir()
    image = tmp_path / "plot.png"
    image.write_bytes(b"png")

    run.log({"loss": 1.5}, step=3)
    run.summary({"AP": 0.4})
    run.log_table("ap", ["model", "AP"], [("alrp", 0.4)])
    run.log_image("curve", image)
    run.finish()
    run.finish()  # idempotent

    assert _names(fake_wandb.calls) == ["init", "log", "log", "log", "finish"]
    assert fake_wandb.calls[1] == ("log", ({"loss": 1.5},), {"step": 3})
    assert fake_wandb.calls[2][1][0] == {"ap": ("Table", ["model", "AP"], [["alrp", 0.4]])}
    assert fake_wandb.calls[3][1][0] == {"curve": ("Image", str(image))}
    assert fake_wandb.run.summary == {"AP": 0.4}
    assert not run.active


@pytest.mark.parametrize("kwargs", [{"mode": "disabled"}, {"enabled": False}, {"rank": 1}], ids=str)
def test_inactive_runs_never_touch_wandb(fake_wandb, kwargs):
    run = WandbRun(**{"mode": "offline", **kwargs})
    run.log({"loss": 1.0}, step=1)
    run.summary({"AP": 1.0})
    run.log_table("t", ["a"], [[1]])
    run.finish()
    assert fake_wandb.calls == []
    assert not run.active


def test_wandb_mode_env_overrides_config(fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    WandbRun(mode="online").log({"x": 1})
    assert fake_wandb.calls == []
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("online") == "offline"


def test_bad_modes_are_refused_with_the_fix(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ValueError, match="logger.mode='cloud'"):
        WandbRun(mode="cloud")
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'.*unset"):
        WandbRun(mode="offline")


def test_missing_wandb_warns_once_and_training_goes_on(monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with caplog.at_level(logging.WARNING, logger="alrp_lab.tracking.wandb_run"):
        run = WandbRun(mode="offline")
        run.log({"loss": 1.0}, step=1)
        run.summary({"AP": 1.0})
        run.finish(exit_code=1)
    assert not run.active
    assert len(caplog.records) == 1
    assert "W&B init failed (ModuleNotFoundError" in caplog.records[0].getMessage()


def test_failure_midway_turns_the_run_into_a_no_op(fake_wandb, caplog):
    fake_wandb.fail_on = "log"
    with caplog.at_level(logging.WARNING, logger="alrp_lab.tracking.wandb_run"):
        with WandbRun(mode="offline") as run:
            run.log({"loss": 1.0}, step=1)  # raises inside wandb: swallowed
            run.log({"loss": 0.5}, step=2)
            run.log_table("t", ["a"], [[1]])
    assert _names(fake_wandb.calls) == ["init", "log"]  # nothing after the failure, not finish
    assert len(caplog.records) == 1
    assert "No space left" in caplog.records[0].getMessage()


def test_failing_init_warns_once(fake_wandb, caplog):
    def broken_init(**kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    fake_wandb.init = broken_init
    with caplog.at_level(logging.WARNING, logger="alrp_lab.tracking.wandb_run"):
        run = WandbRun(mode="online")
        run.log({"loss": 1.0}, step=1)
        run.finish()
    assert not run.active
    assert len(caplog.records) == 1
    assert "W&B init failed (ConnectionError" in caplog.records[0].getMessage()


def test_missing_image_is_skipped_but_the_run_stays(fake_wandb, caplog, tmp_path):
    run = WandbRun(mode="offline")
    with caplog.at_level(logging.WARNING, logger="alrp_lab.tracking.wandb_run"):
        run.log_image("x", tmp_path / "none.png")
    assert "none.png does not exist" in caplog.records[0].getMessage()
    assert run.active
    run.log({"loss": 1.0})
    assert _names(fake_wandb.calls) == ["init", "log"]
