"""Pretrain a backbone by classifying fractal categories (FractalDB, formula-driven).

The backbone is the detector's own :class:`~alrp_lab.models.backbone.ResNet` (batch norm),
with a global-average-pooled linear classifier on C5 that is dropped afterwards, so the
result is a torchvision-format state dict that ``backbone.weights`` loads. Everything is
deterministic in the task's ``seed``: the categories, the rendered bank of images,
the initialisation and the batch order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alrp_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from alrp_lab.errors import ConfigError, RunError
from alrp_lab.models.backbone import ResNet
from alrp_lab.pretrain.fractals import render_batch, sample_categories

__all__ = [
    "PretrainConfig",
    "PretrainSpec",
    "PretrainResult",
    "pretrain_backbone",
    "FORMAT_VERSION",
]

# Bump when what a spec produces changes (rendering, training): cached weights are rebuilt.
FORMAT_VERSION = 2
_RENDER_CHUNK = 64
_WARMUP = 100
_LABEL_SMOOTHING = 0.1
_ARCH_FIELDS = ("depth", "groups", "width_per_group", "base_width")


@dataclass
class PretrainConfig:
    """The ``pretrain`` section (``conf/pretrain/fractal.yaml``): the task and its training.

    ``num_classes`` fractal categories with ``instances`` images each at ``image_size`` px;
    ``iterations`` SGD steps of ``batch_size`` images, peak ``lr`` with a cosine decay,
    ``weight_decay``; everything deterministic in ``seed``.
    """

    num_classes: int
    instances: int
    image_size: int
    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int


@dataclass(frozen=True)
class PretrainSpec:
    """Everything the pretrained weights depend on; its :meth:`key` names the cache file.

    The architecture (``depth``, ``groups``, ``width_per_group``, ``base_width``) as in
    ``conf/backbone``, and the ``task`` of ``conf/pretrain``.
    """

    depth: int
    groups: int
    width_per_group: int
    base_width: int
    task: PretrainConfig

    def __post_init__(self) -> None:
        task = self.task
        for name in ("num_classes", "instances", "image_size", "iterations", "batch_size"):
            if getattr(task, name) < 1:
                raise ConfigError(
                    f"pretraining {name} must be at least 1, got {getattr(task, name)}"
                )
        if task.image_size < 32:
            raise ConfigError(
                f"pretraining image_size must be at least 32 (C5 is 1/32), got {task.image_size}"
            )
        if not task.lr > 0:
            raise ConfigError(f"pretraining lr must be positive, got {task.lr}")

    def key(self) -> str:
        """A short digest of the spec and :data:`FORMAT_VERSION` (the flat field dict)."""
        flat = {name: getattr(self, name) for name in _ARCH_FIELDS} | asdict(self.task)
        blob = json.dumps({"format": FORMAT_VERSION, **flat}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def arch(self) -> str:
        name = f"resnet{self.depth}"
        if self.groups > 1 or self.width_per_group != 64:
            name = f"resnext{self.depth}_{self.groups}x{self.width_per_group}d"
        return f"{name}-w{self.base_width}"


@dataclass(frozen=True)
class PretrainResult:
    """``state_dict``: the backbone's weights (torchvision names, no ``fc``);
    ``val_accuracy``: top-1 on held-out instances; ``final_loss``: the last batch's loss."""

    state_dict: dict[str, Tensor]
    val_accuracy: float
    final_loss: float


def _render_bank(
    spec: PretrainSpec, per_class: int, rng: np.random.Generator, on_chunk: Callable[[int], None]
) -> tuple[Tensor, Tensor]:
    """Images (C * per_class, 3, S, S) uint8 and their labels, class-interleaved."""
    categories = sample_categories(spec.task.num_classes, seed=spec.task.seed)
    labels = np.tile(np.arange(spec.task.num_classes), per_class)
    images = np.empty((labels.size, 3, spec.task.image_size, spec.task.image_size), dtype=np.uint8)
    for start in range(0, labels.size, _RENDER_CHUNK):
        chunk = labels[start : start + _RENDER_CHUNK]
        batch = render_batch(categories, chunk, spec.task.image_size, rng)
        images[start : start + chunk.size] = (batch * 255).round().astype(np.uint8)
        on_chunk(chunk.size)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _normalise(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) normalised as the detectors' inputs."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flips and a random 4-pixel shift (zero padding) per batch."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=generator))
    padded = F.pad(images, (4, 4, 4, 4))
    h, w = images.shape[-2:]
    return padded[..., 4 + dy : 4 + dy + h, 4 + dx : 4 + dx + w]


class _Classifier(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x)[-1].mean(dim=(2, 3)))


def _lr_at(spec: PretrainSpec, step: int) -> float:
    if step < _WARMUP:
        return spec.task.lr * (step + 1) / _WARMUP
    progress = (step - _WARMUP) / max(1, spec.task.iterations - _WARMUP)
    return spec.task.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain_backbone(
    spec: PretrainSpec,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PretrainResult:
    """Render the fractal bank and train the backbone of ``spec`` on it (CPU).

    ``on_progress(stage, done, total)`` is called as images are rendered (stage
    ``"render"``) and steps are taken (``"train"``).
    """
    report = on_progress or (lambda stage, done, total: None)
    rng = np.random.default_rng(spec.task.seed)
    total_images = spec.task.num_classes * (spec.task.instances + _val_per_class(spec))
    rendered = 0

    def chunk_done(n: int) -> None:
        nonlocal rendered
        rendered += n
        report("render", rendered, total_images)

    images, labels = _render_bank(spec, spec.task.instances + _val_per_class(spec), rng, chunk_done)
    n_val = spec.task.num_classes * _val_per_class(spec)
    val_images, val_labels = images[:n_val], labels[:n_val]
    train_images, train_labels = images[n_val:], labels[n_val:]

    torch.manual_seed(spec.task.seed)
    backbone = ResNet(
        spec.depth,
        groups=spec.groups,
        width_per_group=spec.width_per_group,
        base_width=spec.base_width,
        norm="bn",
    )
    model = _Classifier(backbone, spec.task.num_classes)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() == 1 else decay).append(p)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": spec.task.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec.task.lr,
        momentum=0.9,
        nesterov=True,
    )
    generator = torch.Generator().manual_seed(spec.task.seed)
    model.train()
    loss_value = float("nan")
    for step in range(spec.task.iterations):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(spec, step)
        idx = torch.randint(0, train_images.shape[0], (spec.task.batch_size,), generator=generator)
        x = _augment(_normalise(train_images[idx]), generator)
        loss = F.cross_entropy(model(x), train_labels[idx], label_smoothing=_LABEL_SMOOTHING)
        if not torch.isfinite(loss):
            raise RunError(
                f"fractal pretraining diverged at step {step} (loss {loss.item()}): lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        report("train", step + 1, spec.task.iterations)

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, n_val, 256):
            x = _normalise(val_images[start : start + 256])
            correct += int((model(x).argmax(1) == val_labels[start : start + 256]).sum())
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    return PretrainResult(state, correct / max(1, n_val), loss_value)


def _val_per_class(spec: PretrainSpec) -> int:
    # A tenth of the bank (at least one per class) is held out to report accuracy.
    return max(1, spec.task.instances // 10)


def spec_from_config(backbone: Any, pretrain: Mapping[str, Any]) -> PretrainSpec:
    """The spec for a ``backbone`` config node (depth, groups, widths) and a ``pretrain``
    node (the task and its training: ``conf/pretrain/fractal.yaml``)."""
    return PretrainSpec(
        depth=int(backbone.depth),
        groups=int(backbone.groups),
        width_per_group=int(backbone.width_per_group),
        base_width=int(backbone.base_width),
        task=PretrainConfig(**{key: pretrain[key] for key in pretrain}),
    )
