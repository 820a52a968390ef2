"""Load a local torchvision-format checkpoint into a backbone; nothing is ever downloaded.

Accepted files: a ``.pth`` state dict, or a dict holding one under ``"state_dict"`` or
``"model"`` (the usual training-checkpoint layouts). Keys may carry a ``backbone.`` or
``module.`` prefix; the classifier (``fc.*``) is skipped. Anything else that does not fit the
model is reported with the architecture the file seems to be for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from alrp_lab.errors import WeightsError, WeightsNotFoundError

__all__ = ["load_backbone_weights", "describe_resnet_state_dict"]

_CONFIG_KEY = "backbone.weights"
_MAX_LISTED = 5
_BN_STAT_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    # Any unpickling failure means the same to a user: the file is not a usable checkpoint.
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, i.e. running the file's pickled
        # code: never the advice to pass on for a file from elsewhere.
        raise WeightsError(
            f"could not read backbone weights from {path} ({type(exc).__name__}: not a file "
            f"of tensors that loads safely); `{_CONFIG_KEY}` must point to a "
            "torchvision-format .pth state dict"
        ) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path} does not hold a state dict (a mapping of names to tensors); "
            f"`{_CONFIG_KEY}` must point to a torchvision-format .pth file"
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in state):
        # A whole detector's checkpoint: keep its backbone only.
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def describe_resnet_state_dict(state: Mapping[str, Tensor]) -> str:
    """Guess the architecture of a torchvision ResNet/ResNeXt state dict, e.g. "ResNet-50".

    Reads the block counts per stage, the block type (``conv3`` only in bottlenecks), the
    stem width and the grouped convolution of ``layer1.0.conv2``.
    """
    stem = state.get("conv1.weight")
    blocks = []
    for stage in range(1, 5):
        ids = {
            int(m.group(1))
            for k in state
            if (m := re.match(rf"layer{stage}\.(\d+)\.", k)) is not None
        }
        blocks.append(max(ids) + 1 if ids else 0)
    if stem is None or stem.dim() != 4 or 0 in blocks:
        return "not a torchvision ResNet (no conv1.weight / layer1..layer4 keys)"
    bottleneck = "layer1.0.conv3.weight" in state
    expansion = 4 if bottleneck else 1
    depth = 2 + sum(blocks) * (3 if bottleneck else 2)
    base_width = int(stem.shape[0])
    name = f"ResNet-{depth}"
    conv2 = state.get("layer1.0.conv2.weight")
    if bottleneck and conv2 is not None and conv2.dim() == 4:
        width = int(conv2.shape[0])
        groups = max(1, width // int(conv2.shape[1]))
        width_per_group = width // groups * 64 // base_width
        if groups > 1 or width_per_group != 64:
            name = f"ResNeXt-{depth} {groups}x{width_per_group}d"
    if base_width != 64:
        name += f" (base width {base_width})"
    blocks_desc = ", ".join(map(str, blocks))
    kind = "bottleneck" if expansion == 4 else "basic"
    return f"{name} ({kind} blocks [{blocks_desc}])"


def _ignorable(key: str, model_state: Mapping[str, Tensor]) -> bool:
    if key.startswith("fc."):
        return True
    # BN statistics have no counterpart in GroupNorm / FrozenBatchNorm2d (counter only).
    return key.endswith(_BN_STAT_SUFFIXES) and key not in model_state


def load_backbone_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local torchvision-format checkpoint into ``model`` (a ``ResNet``).

    Returns the checkpoint keys skipped on purpose: ``fc.*`` and batch-norm statistics a
    GroupNorm model has no place for (BN counters are dropped without being listed).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not
    a state dict or does not fit the model (other depth, width or block type), naming a few
    offending keys and the architecture the file seems to be for.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"backbone weights file not found: {path}; set `{_CONFIG_KEY}` to a local "
            f"torchvision-format .pth file, or to null to train the backbone from scratch "
            f"(nothing is downloaded)"
        )
    state = _read_state_dict(path)
    model_state = model.state_dict()
    ignored = {k for k in state if _ignorable(k, model_state)}
    state = {k: v for k, v in state.items() if k not in ignored}

    missing = [k for k in model_state if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        ours = getattr(model, "arch", type(model).__name__)
        problems = []
        for label, keys in (
            ("shape mismatches (file vs model)", mismatched),
            ("missing from the file", missing),
            ("not in the model", unexpected),
        ):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else ""
                problems.append(f"{label}: {', '.join(keys[:_MAX_LISTED])}{more}")
        raise WeightsError(
            f"backbone weights {path} do not fit the model ({ours}); the file looks like "
            f"{describe_resnet_state_dict(state)}. {'; '.join(problems)}. Point "
            f"`{_CONFIG_KEY}` at a checkpoint of the same architecture or change the backbone "
            f"settings (depth, groups, width_per_group, base_width) to match the file"
        )
    # strict=False only because optional counters (num_batches_tracked) may be absent.
    model.load_state_dict(state, strict=False)
    return sorted(k for k in ignored if not _optional(k))


def _optional(key: str) -> bool:
    # Older torchvision checkpoints predate the BN counter; the model keeps its own value.
    return key.endswith(".num_batches_tracked")
