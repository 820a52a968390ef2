"""What ranking the global batch changes: aLRP / AP Loss per process against over all images.

With W processes the authors' loss is the mean of W losses, each ranking one process's share
of the batch; ``loss.global_rank=true`` ranks the whole batch (tests/losses/
test_global_batch.py shows both equal these single-process forms). This script computes both
in one process on the same batch of the built-in data, from a fresh model or a trained
checkpoint, and prints the loss values and how far the per-process gradient is from the
global one (cosine, relative difference of the whole parameter gradient).

    python bench/global_rank.py                                   # fresh aLRP model
    python bench/global_rank.py --checkpoint RUN/checkpoints/last.pt --overrides \\
        detector=retinanet assigner=max_iou loss.self_balance=false loss.wr=5
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from alrp_lab.config.compose import compose_config
from alrp_lab.data.collate import collate_detection
from alrp_lab.engine.builders import build_datasets, build_model


def _gradient(model, images, targets, sizes) -> tuple[torch.Tensor, dict[str, float]]:
    model.zero_grad(set_to_none=True)
    out = model(images, targets, image_sizes=sizes)
    out["loss"].backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return grad, {k: float(out[k].detach()) for k in ("loss", "loss_cls", "loss_loc")}


def _per_process(model, images, targets, sizes, world: int):
    """The mean over ``world`` shares of the batch of each share's loss and gradient."""
    share = images.shape[0] // world
    grads, values = [], []
    for r in range(world):
        part = slice(r * share, (r + 1) * share)
        g, v = _gradient(model, images[part], targets[part], sizes[part])
        grads.append(g)
        values.append(v)
    mean = {k: sum(v[k] for v in values) / world for k in values[0]}
    return torch.stack(grads).mean(0), mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", nargs="*", default=[])
    parser.add_argument("--checkpoint", default=None, help="a run's checkpoints/last.pt")
    parser.add_argument("--batch", type=int, default=8, help="the global batch (images)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--batches", type=int, default=3, help="batches averaged over")
    args = parser.parse_args()

    cfg = compose_config(["logger=none", *args.overrides])
    torch.manual_seed(0)
    train_set, _ = build_datasets(cfg.data)
    model = build_model(cfg, train_set.num_classes).train()
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
    console = Console()
    table = Table(title=f"{cfg.loss.name} loss: W processes ranking their share vs the batch")
    for column in ("batch", "W", "loss (W shares)", "loss (global)", "grad cosine", "rel. diff"):
        table.add_column(column, justify="right")
    for b in range(args.batches):
        start = b * args.batch
        images, targets = collate_detection(
            [train_set[i] for i in range(start, start + args.batch)]
        )
        sizes = [tuple(int(v) for v in t["size"]) for t in targets]
        g_global, v_global = _gradient(model, images, targets, sizes)
        for world in args.worlds:
            g_local, v_local = _per_process(model, images, targets, sizes, world)
            cosine = torch.nn.functional.cosine_similarity(g_local, g_global, dim=0)
            rel = (g_local - g_global).norm() / g_global.norm()
            table.add_row(
                str(b),
                str(world),
                f"{v_local['loss']:.4f}",
                f"{v_global['loss']:.4f}",
                f"{float(cosine):.4f}",
                f"{float(rel):.3f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
