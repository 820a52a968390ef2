"""Mixed precision: refused without CUDA with one line; the losses run in float32 under
autocast (checked with the CPU's autocast on the loss alone, which runs no convolution)."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.cli import main
from alrp_lab.engine.amp import autocast, check_amp, grad_scaler
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
