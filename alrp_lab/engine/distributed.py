"""Process-group set-up from torchrun's environment, and collectives that also run alone.

``torchrun --nproc_per_node=N -m alrp_lab.cli ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them.
Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) the run is a single process and no process
group is made, so the same training code runs under plain ``python`` and under torchrun: the
collectives below are no-ops when there is no group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from alrp_lab.errors import ConfigError

T = TypeVar("T")

_TORCHRUN = "launch with torchrun (e.g. torchrun --nproc_per_node=2 ...) or unset WORLD_SIZE"

__all__ = [
    "DistributedContext",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "gather_objects",
    "init_distributed",
    "is_distributed",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its ``rank`` among ``world_size`` processes, its
    ``local_rank`` on this machine, the ``device`` it trains on and the ``backend`` of the
    process group (None for a single process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    # The collectives as methods too, so a bound ``ctx.all_reduce_sum`` can be handed to code
    # that takes a callable (SelfBalance.step_epoch).
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """See :func:`all_reduce_sum`."""
        return all_reduce_sum(tensor)

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """See :func:`broadcast_object`."""
        return broadcast_object(obj, src)

    def gather_objects(self, obj: T, dst: int = 0) -> list[T] | None:
        """See :func:`gather_objects`."""
        return gather_objects(obj, dst)

    def barrier(self) -> None:
        """See :func:`barrier`."""
        barrier()

    def cleanup(self) -> None:
        """See :func:`cleanup`."""
        cleanup()


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ConfigError(f"{name} is not set although WORLD_SIZE is: {_TORCHRUN}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer: {_TORCHRUN}") from None


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA GPU is visible: use train.device=cpu")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are "
                "visible: start at most that many processes per node"
            )
        return torch.device("cuda", local_rank)
    raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda")


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(backend: str | None = None, *, device: str = "auto") -> DistributedContext:
    """Read torchrun's environment and join the process group when there is more than one
    process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None picks nccl on CUDA and gloo on CPU.
        device: ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda"``; on CUDA each process
            takes GPU ``LOCAL_RANK``.

    Raises ValueError naming the fix for a malformed environment or an unusable device.
    A process group that already exists is reused.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = _env_int("LOCAL_RANK", default=0)
        return DistributedContext(
            dist.get_rank(),
            dist.get_world_size(),
            local_rank,
            _pick_device(device, local_rank),
            dist.get_backend(),
        )
    world_size = _env_int("WORLD_SIZE", default=1)
    if world_size < 1:
        raise ConfigError(f"WORLD_SIZE={world_size} must be at least 1: {_TORCHRUN}")
    if world_size == 1:
        local_rank = _env_int("LOCAL_RANK", default=0)
        return DistributedContext(0, 1, local_rank, _pick_device(device, local_rank), None)

    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside 0..{world_size - 1}: {_TORCHRUN}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"{name} is not set: {_TORCHRUN}")
    target = _pick_device(device, local_rank)
    if backend is None:
        backend = "nccl" if target.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"backend {backend!r} is not one of gloo, nccl")
    if backend == "nccl" and target.type != "cuda":
        raise ConfigError("the nccl backend needs CUDA: use backend gloo or train.device=cuda")
    if target.type == "cuda":
        # Before the group exists, so nccl's communicator binds to this process's own GPU.
        torch.cuda.set_device(target)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, target, backend)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` (any shape) over all processes in place and return it.

    A no-op for a single process. Under nccl a CPU tensor (e.g. SelfBalance's float64
    ``[sum_cls, sum_loc, count]``) goes through this process's GPU and is copied back, so
    callers need not know the backend.
    """
    if not is_distributed():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        buffer = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        tensor.copy_(buffer)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every process; ``obj`` when alone."""
    if not is_distributed():
        return obj
    holder: list[Any] = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(obj: T, dst: int = 0) -> list[T] | None:
    """Every process's ``obj`` (picklable) in rank order on rank ``dst``, None on the others;
    ``[obj]`` when alone."""
    if not is_distributed():
        return [obj]
    holder: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, holder, dst=dst)
    return holder


def barrier() -> None:
    """Wait until every process gets here; a no-op for a single process."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave and destroy the process group, if one was made; safe to call more than once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
