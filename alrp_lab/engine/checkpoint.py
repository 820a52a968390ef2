"""Checkpoints a run can resume from exactly, and refuses to load into the wrong model.

A checkpoint is one ``torch.save`` file holding the model's weights (the inner module's, so
a model wrapped in DistributedDataParallel saves the same keys as a bare one), the optimizer
and scheduler states, the epoch and iteration, a caller's ``extra`` dict, a *model signature*
(e.g. ``{"detector": "retinanet", "num_classes": 6, "depth": 18}``) and the RNG states of
torch, CUDA, NumPy and Python's ``random``.

Writes are atomic (:func:`alrp_lab.utils.io.atomic_torch_save`): a crash while saving leaves
the previous ``last.pt`` intact. Reads use ``torch.load(weights_only=True)``, which runs no
pickled code; so everything saved must be tensors or plain Python values, which
:func:`save_checkpoint` checks before writing rather than letting the load fail later.
In DDP only rank 0 should save; every rank loads.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from alrp_lab.errors import CheckpointError, CheckpointNotFoundError
from alrp_lab.utils.io import atomic_torch_save, to_jsonable

CHECKPOINT_FORMAT = "alrp-lab-checkpoint"
CHECKPOINT_VERSION = 1

_FIX = "start a new run folder, or set train.resume=false to train from scratch"

__all__ = [
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap_model",
]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper, else ``model``."""
    if isinstance(model, (DistributedDataParallel, DataParallel)):
        return model.module
    return model


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (loadable with weights_only).

    Keys: ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, one per device, or None
    without CUDA), ``numpy`` (the legacy ``RandomState`` tuple with its key as an int64
    tensor of 624), ``python`` (``random.getstate()``).
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": (
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached_gaussian),
        ),
        "python": random.getstate(),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the RNGs from :func:`capture_rng_state`'s output.

    CUDA states are restored for as many devices as both the checkpoint and this machine have.
    """
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        count = min(len(cuda), torch.cuda.device_count())
        for device in range(count):
            torch.cuda.set_rng_state(cuda[device], device)
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


_PLAIN = (type(None), bool, int, float, str, torch.Tensor, torch.dtype, torch.Size, torch.device)


def _check_loadable(value: Any, where: str) -> None:
    """Raise TypeError naming ``where`` if ``value`` would not load with weights_only=True."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_loadable(key, f"{where} key")
            _check_loadable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_loadable(item, f"{where}[{i}]")
    else:
        raise TypeError(
            f"{where} has type {type(value).__name__}: a checkpoint holds only tensors, numbers, "
            "strings, None, lists, tuples and dicts (it is loaded with weights_only=True)"
        )


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    epoch: int,
    iteration: int,
    extra: Mapping[str, Any] | None = None,
    model_signature: Mapping[str, Any],
) -> None:
    """Write a checkpoint to ``path`` atomically (the old file stays until the new is whole).

    Args:
        model: the model, bare or wrapped in (Distributed)DataParallel.
        optimizer, scheduler: their ``state_dict()`` is saved; ``scheduler`` may be None.
        epoch, iteration: where training stands (the caller's convention, returned as is).
        extra: anything else to resume with; plain values and tensors only.
        model_signature: what makes weights fit a model (detector, num_classes, depth, ...);
            JSON-able values. :func:`load_checkpoint` compares it before loading weights.

    Raises TypeError naming the key when something is not loadable with weights_only.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_signature": to_jsonable(model_signature, "model_signature"),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "iteration": int(iteration),
        "extra": dict(extra or {}),
        "rng": capture_rng_state(),
    }
    _check_loadable(payload, "checkpoint")
    atomic_torch_save(payload, path)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_signature(path: Path, saved: Any, expected: Mapping[str, Any]) -> None:
    expected = to_jsonable(expected, "expected_signature")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path} has no model signature: {_FIX}")
    missing = object()

    def show(value: Any) -> str:
        return "absent" if value is missing else repr(value)

    differences = [
        f"{key}: {show(saved.get(key, missing))} in the checkpoint, "
        f"{show(expected.get(key, missing))} in this run"
        for key in sorted(set(saved) | set(expected))
        if saved.get(key, missing) != expected.get(key, missing)
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was saved by another model ({'; '.join(differences)}): {_FIX}"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    expected_signature: Mapping[str, Any],
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``model`` (and states).

    The model signature is compared with ``expected_signature`` before any weight is touched.
    Tensors are loaded to the CPU and then copied into the model's and optimizer's own devices.

    Returns:
        ``{"epoch": int, "iteration": int, "extra": dict}`` as saved.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated or corrupt, is not an alrp-lab checkpoint, was saved
            by a model with another signature, or does not fit the model/optimizer/scheduler;
            the message names the difference and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"no checkpoint at {path}: set train.resume=false to start fresh"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports a damaged file through many exception types
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {_first_line(err)}); it is "
            f"truncated, corrupt or not an alrp-lab checkpoint: delete it, or {_FIX}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an alrp-lab checkpoint: {_FIX}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('version')!r}, this alrp-lab "
            f"reads version {CHECKPOINT_VERSION}: {_FIX}"
        )
    _check_signature(path, payload.get("model_signature"), expected_signature)

    try:
        unwrap_model(model).load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path} has the expected signature but its weights do not fit this "
            f"model ({_first_line(err)}); the model code changed since it was saved: {_FIX}"
        ) from None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {path}: the optimizer state does not fit this optimizer "
                f"({_first_line(err)}): {_FIX}"
            ) from None
    if scheduler is not None:
        if payload.get("scheduler") is None:
            raise CheckpointError(f"checkpoint {path} was saved without a scheduler state: {_FIX}")
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng:
        restore_rng_state(payload["rng"])
    return {"epoch": payload["epoch"], "iteration": payload["iteration"], "extra": payload["extra"]}
