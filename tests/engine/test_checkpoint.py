import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from alrp_lab.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)

SIGNATURE = {"detector": "retinanet", "num_classes": 6, "depth": 18, "strides": (8, 16)}


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).double()
        self.register_buffer("weight_sb", torch.tensor(50.0, dtype=torch.float64))

    def forward(self, x):
        return self.fc(x)


def _setup(seed):
    torch.manual_seed(seed)
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def _train(model, optimizer, scheduler, steps):
    """Steps that draw from all three RNGs, so a resume only matches if each is restored."""
    for _ in range(steps):
        x = torch.randn(5, 4, dtype=torch.float64)
        x = x * float(np.random.uniform(0.5, 1.5)) + random.random()
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_round_trip_resumes_bit_for_bit(tmp_path):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    np.random.seed(seed)
    random.seed(seed)
    model, optimizer, scheduler = _setup(seed)
    _train(model, optimizer, scheduler, 3)
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=1,
        iteration=3,
        extra={"best_ap": 0.25, "history": [1.0, 2.0], "sb": torch.tensor([1.0, 2.0])},
        model_signature=SIGNATURE,
    )
    _train(model, optimizer, scheduler, 4)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    # A fresh process would start from other weights and other RNG states.
    torch.manual_seed(seed + 1)
    np.random.seed(seed + 1)
    random.seed(seed + 1)
    resumed, resumed_opt, resumed_sched = _setup(seed + 2)
    state = load_checkpoint(
        path,
        model=resumed,
        optimizer=resumed_opt,
        scheduler=resumed_sched,
        expected_signature={**SIGNATURE, "strides": [8, 16]},  # tuple or list: same value
    )
    assert state["epoch"] == 1 and state["iteration"] == 3
    assert state["extra"]["best_ap"] == 0.25 and state["extra"]["history"] == [1.0, 2.0]
    assert torch.equal(state["extra"]["sb"], torch.tensor([1.0, 2.0]))
    assert resumed_sched.last_epoch == 3
    _train(resumed, resumed_opt, resumed_sched, 4)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_rng_states_round_trip():
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    torch.rand(10)
    np.random.rand(10)
    random.random()
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def _save(path, model=None, signature=SIGNATURE):
    model = model or TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(
        path, model=model, optimizer=optimizer, epoch=0, iteration=0, model_signature=signature
    )
    return model


def test_signature_mismatch_names_keys_and_fix_before_touching_weights(tmp_path):
    path = tmp_path / "last.pt"
    _save(path, signature={**SIGNATURE, "num_classes": 80, "depth": 50})
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wanted = {**SIGNATURE, "norm": "gn"}
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, model=model, expected_signature=wanted)
    message = str(info.value)
    assert "depth: 50 in the checkpoint, 18 in this run" in message
    assert "num_classes: 80 in the checkpoint, 6 in this run" in message
    assert "norm: absent in the checkpoint, 'gn' in this run" in message
    assert "detector" not in message
    assert "start a new run folder" in message and "train.resume=false" in message
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_gives_clear_error(tmp_path, damage):
    path = tmp_path / "last.pt"
    _save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"last\.pt cannot be read .*truncated, corrupt"):
        load_checkpoint(path, model=TinyNet(), expected_signature=SIGNATURE)


def test_foreign_torch_file_and_missing_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(ValueError, match="not an alrp-lab checkpoint"):
        load_checkpoint(path, model=TinyNet(), expected_signature=SIGNATURE)
    with pytest.raises(FileNotFoundError, match="train.resume=false"):
        load_checkpoint(tmp_path / "none.pt", model=TinyNet(), expected_signature=SIGNATURE)


def test_weights_that_do_not_fit_give_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    _save(path)
    other = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weights do not fit this model"):
        load_checkpoint(path, model=other, expected_signature=SIGNATURE)


def test_unloadable_extra_is_refused_at_save_time(tmp_path):
    model = TinyNet()
    with pytest.raises(TypeError, match=r"\['extra'\]\['when'\] has type object"):
        save_checkpoint(
            tmp_path / "last.pt",
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epoch=0,
            iteration=0,
            extra={"when": object()},
            model_signature=SIGNATURE,
        )
    assert not (tmp_path / "last.pt").exists()


def test_wrapped_models_save_and_load_the_inner_module(tmp_path):
    path = tmp_path / "last.pt"
    inner = TinyNet()
    wrapped = DataParallel(inner)  # on CPU it just holds the module
    assert unwrap_model(wrapped) is inner
    _save(path, wrapped)
    saved = torch.load(path, weights_only=True)["model"]
    assert set(saved) == {"fc.weight", "fc.bias", "weight_sb"}
    target = DataParallel(TinyNet())
    load_checkpoint(path, model=target, expected_signature=SIGNATURE)
    assert torch.equal(target.module.fc.weight, inner.fc.weight)


def test_ddp_wrapped_model_round_trip(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        source = DistributedDataParallel(TinyNet())
        path = tmp_path / "last.pt"
        _save(path, source)
        bare = TinyNet()
        load_checkpoint(path, model=bare, expected_signature=SIGNATURE)
        assert torch.equal(bare.fc.weight, source.module.fc.weight)
        target = DistributedDataParallel(TinyNet())
        load_checkpoint(path, model=target, expected_signature=SIGNATURE)
        assert torch.equal(target.module.fc.bias, source.module.fc.bias)
    finally:
        dist.destroy_process_group()
