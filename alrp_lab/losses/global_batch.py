"""The ranking losses over the global batch: gather every process's examples, keep each
process's gradient on its own.

The authors rank per GPU, so their aLRP and AP Loss change with the number of GPUs: a
positive is ranked only against the negatives of its own GPU's images. Gathering the
flattened logits, labels and localisation errors of all processes before the loss makes
every process compute the loss of the whole global batch, the value one process would get
from the same images.

Gradients: every process computes the same global loss L, but it can only send gradients
into its own part of the graph. :func:`gather_with_own_grad` therefore passes back the
gradient of L with respect to this process's entries, times the world size, because
DistributedDataParallel averages the parameters' gradients over processes: the mean of
``W * dL/ds_r . ds_r/dtheta`` over the W processes is the single-process gradient
``sum_r dL/ds_r . ds_r/dtheta``.

Without a process group (one process) both functions return their input unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather", "gather_with_own_grad", "global_batch_active"]


def global_batch_active() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_parts(tensor: Tensor) -> tuple[list[Tensor], list[int]]:
    """Every process's ``tensor`` (sizes may differ along dim 0), and the sizes."""
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    # all_gather needs equal shapes: pad to the largest (at least one row, as empty tensors
    # are not gathered by every backend), then cut each part back.
    rows = max(max(counts), 1)
    padded = tensor.new_zeros((rows, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded.contiguous())
    return [b[:n] for b, n in zip(buffers, counts, strict=True)], counts


def gather(tensor: Tensor) -> Tensor:
    """(sum_r n_r, ...) the processes' ``tensor`` (n_r, ...) concatenated in rank order, no
    gradient (labels, masks). ``tensor`` itself without a process group."""
    if not global_batch_active():
        return tensor
    parts, _ = _gather_parts(tensor.detach())
    return torch.cat(parts)


class _GatherWithOwnGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        parts, counts = _gather_parts(tensor.detach())
        rank = dist.get_rank()
        ctx.start = sum(counts[:rank])
        ctx.stop = ctx.start + counts[rank]
        ctx.world = dist.get_world_size()
        # This process's own values, bitwise, in its slot.
        parts[rank] = tensor.detach()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad[ctx.start : ctx.stop] * ctx.world


def gather_with_own_grad(tensor: Tensor) -> Tensor:
    """(sum_r n_r, ...) the processes' ``tensor`` (n_r, ...) concatenated in rank order; the
    backward returns this process's slice of the gradient times the world size (see the
    module's docstring). ``tensor`` itself without a process group."""
    if not global_batch_active():
        return tensor
    return _GatherWithOwnGrad.apply(tensor)
