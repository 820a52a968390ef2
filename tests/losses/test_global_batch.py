"""Ranking the global batch across processes: 2 gloo processes against 1 with the same batch.

The processes are spawned here (``torch.multiprocessing``), each with half of the examples
(or images); the parent computes the single-process reference on all of them.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from alrp_lab.losses import alrp_loss, ap_loss
from alrp_lab.losses.global_batch import gather, gather_with_own_grad
from tests.gloo import free_port

WORLD = 2


def _join(rank: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)


def _examples(seed: int, sizes: tuple[int, ...]) -> list[dict[str, torch.Tensor]]:
    """Per process: float64 logits (M_r,), labels (M_r,) with some positives and ignored,
    errors (P_r,) in [0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for m in sizes:
        labels = torch.zeros(m, dtype=torch.long)
        labels[torch.randperm(m, generator=gen)[: max(1, m // 8)]] = 1
        labels[torch.randperm(m, generator=gen)[: m // 16]] = -1
        # A positive relabelled ignored above is ignored; keep at least one positive.
        labels[0] = 1
        logits = torch.randn(m, generator=gen, dtype=torch.float64) * 2
        errors = torch.rand(int((labels == 1).sum()), generator=gen, dtype=torch.float64)
        out.append({"logits": logits, "labels": labels, "errors": errors})
    return out


def _loss_worker(rank: int, port: int, seed: int, sizes: tuple[int, ...], out_dir: str) -> None:
    import torch.distributed as dist

    _join(rank, port)
    try:
        mine = _examples(seed, sizes)[rank]
        logits = mine["logits"].clone().requires_grad_(True)
        errors = mine["errors"].clone().requires_grad_(True)
        cls, loc = alrp_loss(
            gather_with_own_grad(logits), gather(mine["labels"]), gather_with_own_grad(errors)
        )
        (cls + loc).backward()
        logits_ap = mine["logits"].clone().requires_grad_(True)
        ap = ap_loss(gather_with_own_grad(logits_ap), gather(mine["labels"]))
        ap.backward()
        torch.save(
            {
                "cls": cls.detach(),
                "loc": loc.detach(),
                "ap": ap.detach(),
                "grad_logits": logits.grad,
                "grad_errors": errors.grad,
                "grad_ap": logits_ap.grad,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_gathered_ranking_losses_equal_one_process_on_the_whole_batch(tmp_path):
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    sizes = (300, 170)  # unequal shares, as with images of different sizes
    mp.spawn(_loss_worker, args=(free_port(), seed, sizes, str(tmp_path)), nprocs=WORLD)
    parts = _examples(seed, sizes)
    logits = torch.cat([p["logits"] for p in parts]).requires_grad_(True)
    labels = torch.cat([p["labels"] for p in parts])
    errors = torch.cat([p["errors"] for p in parts]).requires_grad_(True)
    cls, loc = alrp_loss(logits, labels, errors)
    (cls + loc).backward()
    logits_ap = torch.cat([p["logits"] for p in parts]).requires_grad_(True)
    ap = ap_loss(logits_ap, labels)
    ap.backward()
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    starts, pos_starts = [0, sizes[0]], [0, len(parts[0]["errors"])]
    for rank, result in enumerate(out):
        # Every process computes the single process's loss, bitwise in float64 up to the
        # order of sums.
        torch.testing.assert_close(result["cls"], cls.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(result["loc"], loc.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(result["ap"], ap.detach(), rtol=1e-12, atol=0)
        # Its own entries' gradient, times the world size (DDP then averages).
        own = slice(starts[rank], starts[rank] + sizes[rank])
        own_pos = slice(pos_starts[rank], pos_starts[rank] + len(parts[rank]["errors"]))
        for key, reference in (
            ("grad_logits", logits.grad[own]),
            ("grad_errors", errors.grad[own_pos]),
            ("grad_ap", logits_ap.grad[own]),
        ):
            torch.testing.assert_close(result[key], WORLD * reference, rtol=1e-10, atol=1e-14)


def test_without_a_process_group_the_gathers_are_the_identity():
    x = torch.randn(5, requires_grad=True)
    assert gather_with_own_grad(x) is x
    labels = torch.tensor([1, 0, -1])
    assert gather(labels) is labels


# A tiny RetinaNet in DDP: 2 processes x 2 images against 1 process x 4 images.

_STEPS = 3


def _model(global_rank: bool):
    from alrp_lab.models import build_retinanet
    from tests.models.helpers import TINY_DENSE, config_sections

    torch.manual_seed(0)
    sections = config_sections("retinanet", **TINY_DENSE, norm="frozen_bn", global_rank=global_rank)
    # A constant weight: SB would need the training loop to feed it.
    sections["loss"].self_balance = False
    sections["loss"].wr = 5.0
    return build_retinanet(3, **sections).train()


def _batch(seed: int):
    from tests.models.helpers import random_images, random_targets

    return random_images(seed, batch=4), random_targets(seed + 1, 3, counts=(2, 1, 3, 2))


def _train(model, images, targets) -> list[dict[str, torch.Tensor]]:
    """``_STEPS`` SGD steps; per step the loss and the gradients (after DDP's average)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    history = []
    for _ in range(_STEPS):
        optimizer.zero_grad()
        out = model(images, targets)
        out["loss"].backward()
        # DDP and the halves' wrapper hold the detector as .module.
        named = getattr(model, "module", model).named_parameters()
        history.append(
            {
                "loss": out["loss"].detach(),
                **{f"grad.{k}": p.grad.clone() for k, p in named if p.grad is not None},
            }
        )
        optimizer.step()
    return history


def _ddp_worker(rank: int, port: int, seed: int, global_rank: bool, out_dir: str) -> None:
    import torch.distributed as dist

    _join(rank, port)
    try:
        model = _model(global_rank)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        images, targets = _batch(seed)
        mine = slice(2 * rank, 2 * rank + 2)
        history = _train(ddp, images[mine], targets[mine])
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"history": history, "weights": weights}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("global_rank", [True, False])
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, global_rank):
    """With global ranking, 2 processes follow 1 process step for step (losses, gradients,
    weights to 1e-5); without, each ranks its own half, as the authors' per-GPU loss, and
    follows 1 process that averages the two halves' losses."""
    torch.set_num_threads(1)
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    mp.spawn(_ddp_worker, args=(free_port(), seed, global_rank, str(tmp_path)), nprocs=WORLD)
    out = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(WORLD)]

    images, targets = _batch(seed)
    single = _model(global_rank=False)
    if global_rank:
        history = _train(single, images, targets)
    else:

        class _Halves(torch.nn.Module):
            # One process averaging the per-half losses: what per-process ranking computes.
            def __init__(self, model):
                super().__init__()
                self.module = model

            def forward(self, imgs, tgts):
                halves = [self.module(imgs[i : i + 2], tgts[i : i + 2]) for i in (0, 2)]
                return {"loss": (halves[0]["loss"] + halves[1]["loss"]) / 2}

        history = _train(_Halves(single), images, targets)

    for rank in range(WORLD):
        for step, (theirs, ours) in enumerate(zip(out[rank]["history"], history, strict=True)):
            grads = [k for k in ours if k.startswith("grad.")]
            assert grads and set(grads) == {k for k in theirs if k.startswith("grad.")}
            for key in grads:
                torch.testing.assert_close(
                    theirs[key], ours[key], rtol=1e-5, atol=1e-6, msg=f"step {step} {key}"
                )
            if global_rank:
                torch.testing.assert_close(theirs["loss"], ours["loss"], rtol=1e-5, atol=1e-6)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(out[rank]["weights"][key], value, rtol=1e-5, atol=1e-6)
