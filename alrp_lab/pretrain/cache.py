"""The machine's cache of pretrained backbones: one file per :class:`PretrainSpec`.

Layout under ``root`` (``$ALRP_LAB_DATA/backbones``, default ``~/.cache/alrp-lab/backbones``)::

    resnet18-w32-fractal64-<key>.pth    torchvision-format state dict (no fc)
    resnet18-w32-fractal64-<key>.json   the spec, held-out accuracy, seconds it took

A build holds an exclusive lock on ``<name>.lock`` so that concurrent runs (a sweep's jobs,
torchrun's ranks) build once and the others wait for it; both files are written to a
temporary name and renamed into place, the ``.pth`` last, so a file under the final name is
always complete.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from alrp_lab.pretrain.train import FORMAT_VERSION, PretrainSpec, pretrain_backbone
from alrp_lab.utils.io import atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["default_root", "weights_path", "builtin_weights"]


def default_root() -> Path:
    """``$ALRP_LAB_DATA/backbones`` (``~/.cache/alrp-lab/backbones`` when unset)."""
    base = os.environ.get("ALRP_LAB_DATA", "~/.cache/alrp-lab")
    return Path(base).expanduser() / "backbones"


def weights_path(spec: PretrainSpec, root: Path | None = None) -> Path:
    """Where the weights of ``spec`` are (or will be) cached."""
    root = default_root() if root is None else Path(root)
    return root / f"{spec.arch()}-fractal{spec.task.num_classes}-{spec.key()}.pth"


def _progress_printer(show: bool):
    if not show:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            label = "fractal images" if stage == "render" else "pretraining steps"
            tasks[stage] = progress.add_task(label, total=total)
        progress.update(tasks[stage], completed=done)

    return progress, update


def builtin_weights(
    spec: PretrainSpec, root: Path | None = None, show_progress: bool = True
) -> Path:
    """The cached weights of ``spec``, built first when missing (minutes on a CPU)."""
    path = weights_path(spec, root)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # built by another process while this one waited
            return path
        log.info("building the built-in backbone %s (fractal pretraining)", path.name)
        progress, update = _progress_printer(show_progress)
        tic = time.perf_counter()
        if progress is not None:
            with progress:
                result = pretrain_backbone(spec, on_progress=update)
        else:
            result = pretrain_backbone(spec)
        seconds = time.perf_counter() - tic
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "format": FORMAT_VERSION,
                "spec": asdict(spec),
                "key": spec.key(),
                "val_accuracy": result.val_accuracy,
                "final_loss": result.final_loss,
                "seconds": round(seconds, 1),
                "torch": torch.__version__,
            },
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(result.state_dict, tmp)
        os.replace(tmp, path)
        log.info(
            "built %s in %.0f s (held-out accuracy %.3f on %d fractal categories)",
            path,
            seconds,
            result.val_accuracy,
            spec.task.num_classes,
        )
    return path


def read_manifest(path: Path) -> dict:
    """The ``.json`` written beside cached weights ``path``."""
    return json.loads(Path(path).with_suffix(".json").read_text())
