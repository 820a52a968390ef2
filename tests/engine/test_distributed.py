import os

import pytest
import torch
import torch.multiprocessing as mp

from alrp_lab.engine.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    is_distributed,
)
from tests.gloo import free_port

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_needs_no_group(no_torchrun):
    ctx = init_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (0, 1, 0)
    assert ctx.is_main and not ctx.is_distributed and ctx.backend is None
    assert ctx.device == torch.device("cpu")
    assert not is_distributed()
    values = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64)
    assert all_reduce_sum(values) is values
    assert values.tolist() == [1.5, 2.0, 3.0]
    assert ctx.all_reduce_sum(values) is values
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert ctx.broadcast_object([2]) == [2]
    barrier()
    ctx.barrier()
    cleanup()


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set.*torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, r"RANK=2 is outside 0\.\.1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "MASTER_ADDR is not set"),
        ({"WORLD_SIZE": "0"}, "at least 1"),
    ],
)
def test_malformed_environment_is_refused(no_torchrun, monkeypatch, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        init_distributed(device="cpu")


def test_bad_device_and_backend(no_torchrun, monkeypatch):
    with pytest.raises(ValueError, match="one of auto, cpu, cuda"):
        init_distributed(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.device=cpu"):
            init_distributed(device="cuda")
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match="nccl backend needs CUDA"):
        init_distributed("nccl", device="cpu")


def _worker(rank: int, world_size: int, port: int, out_dir: str, seed: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ctx = init_distributed(device="cpu")
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world_size, "gloo")
        counts = all_reduce_sum(torch.tensor([rank + 1.0]))
        # SelfBalance's per-epoch [sum_cls, sum_loc, count]: different on each rank before.
        generator = torch.Generator().manual_seed(seed + rank)
        local = torch.rand(3, generator=generator, dtype=torch.float64)
        summed = ctx.all_reduce_sum(local.clone())  # bound method, as SelfBalance takes it
        message = broadcast_object({"from": rank, "digest": "abc"})
        barrier()
        ctx.barrier()
        torch.save(
            {"counts": counts, "local": local, "summed": summed, "message": message},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        cleanup()


def test_two_gloo_processes_sum_and_agree(tmp_path):
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    world_size = 2
    mp.spawn(_worker, args=(world_size, free_port(), str(tmp_path), seed), nprocs=world_size)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for result in out:
        assert result["counts"].tolist() == [3.0]
        assert result["message"] == {"from": 0, "digest": "abc"}
    # Bitwise equal across ranks (so every rank computes the same SB weight), and the sum.
    assert torch.equal(out[0]["summed"], out[1]["summed"])
    assert out[0]["summed"].dtype == torch.float64
    torch.testing.assert_close(
        out[0]["summed"], out[0]["local"] + out[1]["local"], rtol=1e-15, atol=0
    )
