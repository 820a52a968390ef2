"""Mixed precision: refused without CUDA with one line; the losses run in float32 under
autocast (checked with the CPU's autocast on the loss alone, which runs no convolution)."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.cli import main
from alrp_lab.engine.amp import MIN_LOSS_SCALE, autocast, check_amp, grad_scaler, scale_collapsed
from alrp_lab.errors import ConfigError


def test_amp_needs_cuda():
    check_amp(None, torch.device("cpu"))
    for mode in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match=rf"train.amp={mode} needs a CUDA GPU.*drop"):
            check_amp(mode, torch.device("cpu"))
    with pytest.raises(ConfigError, match="not one of bf16, fp16"):
        check_amp("int8", torch.device("cpu"))


def test_off_by_default_passes_straight_through():
    assert not grad_scaler(None, torch.device("cpu")).is_enabled()
    with autocast(None, torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_a_cpu_run_asking_for_amp_is_one_line(tmp_path, capsys):
    code = main(["run", "debug=smoke", "train.amp=bf16", f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "needs a CUDA GPU" in err
    code = main(["run", "debug=smoke", "train.amp=fp8", f"hydra.run.dir={tmp_path / 's'}"])
    assert code == 2 and "train.amp='fp8' is not one of bf16, fp16" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["alrp", "ap", "focal"])
def test_the_loss_runs_in_float32_under_autocast(loss):
    from alrp_lab.models import build_retinanet
    from tests.models.helpers import TINY_DENSE, config_sections, random_images, random_targets

    torch.manual_seed(0)
    extra = {} if loss == "alrp" else {"box_error": "smooth_l1" if loss == "ap" else "l1"}
    model = build_retinanet(
        3,
        **config_sections("retinanet", **TINY_DENSE, loss=loss, **extra),
    ).train()
    captured = {}

    def keep(module, args, kwargs):
        captured["args"] = args

    handle = model.loss.register_forward_pre_hook(keep, with_kwargs=True)
    model(random_images(3), random_targets(4, 3))
    handle.remove()
    cls, deltas, *rest = captured["args"]
    half = (cls.detach().bfloat16(), deltas.detach().bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = model.loss(*half, *rest)
    plain = model.loss(half[0].float(), half[1].float(), *rest)
    for key in ("loss", "loss_cls", "loss_loc"):
        assert under[key].dtype == torch.float32
        assert torch.equal(under[key], plain[key]), key


def _scaler_steps(grad_value: float, steps: int) -> list[float | None]:
    """scale_collapsed after each of ``steps`` fp16-style steps whose gradients are all
    ``grad_value`` (torch's CPU scaler, from its default initial scale 2**16)."""
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    seen = []
    for _ in range(steps):
        optimizer.zero_grad()
        scaler.scale(weight.sum()).backward()
        weight.grad.fill_(grad_value)
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        seen.append(scale_collapsed(scaler))
    return seen


def test_the_loss_scale_collapses_after_30_overflows_in_a_row():
    seen = _scaler_steps(float("inf"), 30)
    # Each overflow halves the scale: 2**16 / 2**29 = 1.2e-4 is above the floor, 2**-14 not.
    assert seen[:29] == [None] * 29  # down to 2**-13
    assert seen[29] == 2.0**-14 and seen[29] < MIN_LOSS_SCALE


def test_finite_gradients_never_collapse_the_scale():
    assert _scaler_steps(0.5, 40) == [None] * 40
    assert scale_collapsed(grad_scaler(None, torch.device("cpu"))) is None


def test_a_run_whose_fp16_gradients_never_turn_finite_stops(tmp_path, capsys, monkeypatch):
    # No fp16 on a CPU: an enabled CPU scaler whose every gradient overflows stands in for one.
    from alrp_lab.engine import train as train_module

    class OverflowingScaler(torch.amp.GradScaler):
        def unscale_(self, optimizer):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.fill_(float("inf"))
            super().unscale_(optimizer)

    def scaler(amp, device):
        return OverflowingScaler("cpu", init_scale=2.0**-10, enabled=True)

    monkeypatch.setattr(train_module, "grad_scaler", scaler)
    run = ["run", "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}", "train.epochs=2"]
    code = main([*run, "train.max_iters_per_epoch=3"])
    err = capsys.readouterr().err
    # 2**-10 halves to 2**-14 < 1e-4 on the fourth skipped step: epoch 2, iteration 3.
    assert code == 2 and "fp16's loss scale fell to 6.1e-05 (below 0.0001) at epoch 2" in err
    assert "iteration 3" in err and "keeps epoch 1, with finite weights" in err
