"""Mixed precision (``train.amp``): autocast for the network, float32 for the losses, a
gradient scaler for float16.

``bf16`` runs the convolutions in bfloat16 (CUDA, compute capability 8.0 or later), ``fp16``
in float16 with a ``torch.amp.GradScaler`` so that small gradients survive; both on CUDA
only. (CPU autocast exists, but bfloat16 convolutions on the project's 2-core CPU gave NaN
weight gradients in some runs and not others of the same smoke config: not a path to
offer.) The loss modules run outside autocast with their inputs cast to float32
(``models.precision.float32_loss``): the ranking losses sort and accumulate over millions of
examples, which half precision would round away. None (the default) changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from alrp_lab.errors import ConfigError

__all__ = ["AMP_MODES", "MIN_LOSS_SCALE", "autocast", "check_amp", "grad_scaler", "scale_collapsed"]

AMP_MODES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# fp16's scaler skips a step whose gradients overflow and halves its scale. From torch's
# initial 2**16, 30 such steps in a row take it below this floor: at a scale that small the
# gradients are non-finite without any scaling, so the run has diverged (fairseq stops at the
# same floor). Without the floor such a run skips every step to the end, silently.
MIN_LOSS_SCALE = 1.0e-4


def check_amp(amp: str | None, device: torch.device) -> None:
    """Raise :class:`ConfigError` naming the fix when ``device`` cannot run ``amp``."""
    if amp is None:
        return
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp={amp!r} is not one of {', '.join(AMP_MODES)} or null")
    if device.type != "cuda":
        raise ConfigError(
            f"train.amp={amp} needs a CUDA GPU (this run is on {device.type}): drop train.amp"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"train.amp=bf16 needs a GPU with bfloat16 ({torch.cuda.get_device_name(device)} "
            "has none): use train.amp=fp16"
        )


def autocast(amp: str | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast region (a no-op context for None)."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_MODES[amp])


def grad_scaler(amp: str | None, device: torch.device) -> torch.amp.GradScaler:
    """A scaler that is on for fp16 only; off, its calls pass straight through."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def scale_collapsed(scaler: torch.amp.GradScaler) -> float | None:
    """The scaler's scale when it has fallen below :data:`MIN_LOSS_SCALE`, else None.

    Always None for a disabled scaler (bf16 and full precision). Reads the scale to the
    host, once a step; the step's own finite-gradient check reads the host anyway.
    """
    if not scaler.is_enabled():
        return None
    scale = float(scaler.get_scale())
    return scale if scale < MIN_LOSS_SCALE else None
