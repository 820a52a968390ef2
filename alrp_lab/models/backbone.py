"""ResNet and ResNeXt backbones with torchvision parameter names.

The module tree mirrors ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``downsample.0/1``) so a torchvision state dict loads with ``load_state_dict``
(see ``weights.load_backbone_weights``); there is no ``fc``: a detector needs C3..C5 only.
``base_width`` (the stem's channel count, 64 in torchvision) scales every stage, which gives
narrow backbones for CPU runs under the same parameter names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "FrozenBatchNorm2d",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnext101_32x8d",
    "NORMS",
]

NORMS = ("bn", "frozen_bn", "gn")
_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, no gradients).

    Same buffers as ``nn.BatchNorm2d`` minus ``num_batches_tracked``, so a BN state dict
    loads into it. Input and output (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A BatchNorm2d checkpoint carries this counter; it means nothing for frozen stats.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _norm_factory(norm: str) -> Callable[[int], nn.Module]:
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        # 32 groups as in the GN paper; narrow layers (base_width < 32) fall back to a divisor.
        return lambda c: nn.GroupNorm(math.gcd(32, c), c)
    raise ValueError(f"unknown backbone norm {norm!r}; choose one of {', '.join(NORMS)}")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual: (B, in, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: Callable[[int], nn.Module],
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError(
                "BasicBlock (ResNet-18/34) supports only groups=1 and width_per_group=64; "
                "use depth 50 or 101 for ResNeXt"
            )
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 (stride here, torchvision's "v1.5") -> 1x1 with a residual.

    (B, in, H, W) -> (B, 4 * planes, H/s, W/s).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: Callable[[int], nn.Module],
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = norm(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = norm(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18/34/50/101 or ResNeXt (``groups`` > 1) returning C3, C4, C5 (and C2).

    Args:
        depth: 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        groups, width_per_group: ResNeXt cardinality and width (32, 8 for ResNeXt-101 32x8d).
        base_width: stem channels; stage i has ``base_width * 2**i`` planes (64: torchvision).
        norm: ``"bn"``, ``"frozen_bn"`` (fixed statistics, the detection default with
            pretrained weights) or ``"gn"``.
        frozen_stages: -1 trains everything; k >= 0 freezes the stem and layer1..layerk
            (parameters stop requiring gradients and their batch norms stay in eval mode).
        with_c2: also return C2 (layer1's output, stride 4) first, for a pyramid from P2
            (mmdetection's Faster R-CNN); the parameters are the same either way.

    ``forward(x (B, 3, H, W)) -> [C3 (B, c3, H/8, W/8), C4 (B, c4, H/16, W/16),
    C5 (B, c5, H/32, W/32)]`` with ``out_channels == [c3, c4, c5]``; with ``with_c2``,
    ``[C2 (B, c2, H/4, W/4), C3, C4, C5]`` and ``[c2, c3, c4, c5]``.
    """

    def __init__(
        self,
        depth: int = 50,
        groups: int = 1,
        width_per_group: int = 64,
        norm: str = "bn",
        frozen_stages: int = -1,
        base_width: int = 64,
        with_c2: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(_DEPTHS)}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        if base_width < 1 or groups < 1 or width_per_group < 1:
            raise ValueError(
                f"base_width, groups and width_per_group must be positive, got "
                f"{base_width}, {groups}, {width_per_group}"
            )
        kind, layers = _DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        norm_layer = _norm_factory(norm)
        self.depth = depth
        self.groups = groups
        self.width_per_group = width_per_group
        self.base_width = base_width
        self.norm = norm
        self.frozen_stages = frozen_stages
        self.with_c2 = bool(with_c2)

        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = base_width
        self.out_channels: list[int] = []
        for i, num_blocks in enumerate(layers):
            planes = base_width * 2**i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    _conv1x1(inplanes, planes * block.expansion, stride),
                    norm_layer(planes * block.expansion),
                )
            blocks = [
                block(inplanes, planes, stride, downsample, norm_layer, groups, width_per_group)
            ]
            inplanes = planes * block.expansion
            blocks += [
                block(inplanes, planes, 1, None, norm_layer, groups, width_per_group)
                for _ in range(1, num_blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            if i >= 1 or with_c2:
                self.out_channels.append(inplanes)

        self._init_weights()
        self._freeze()

    @property
    def arch(self) -> str:
        """A human-readable name, e.g. ``"ResNet-50"`` or ``"ResNeXt-101 32x8d"``."""
        name = f"ResNet-{self.depth}"
        if self.groups > 1 or self.width_per_group != 64:
            name = f"ResNeXt-{self.depth} {self.groups}x{self.width_per_group}d"
        if self.base_width != 64:
            name += f" (base width {self.base_width})"
        return name

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a model trained from scratch starts where theirs does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stages: list[nn.Module] = [self.conv1, self.bn1]
        stages += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return stages

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Switch modes, keeping the batch norms of frozen stages in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) -> [C3, C4, C5] with strides 8, 16, 32; with ``with_c2``,
        [C2, C3, C4, C5] with strides 4..32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5] if self.with_c2 else [c3, c4, c5]


def resnext101_32x8d(norm: str = "bn", frozen_stages: int = -1, base_width: int = 64) -> ResNet:
    """ResNeXt-101 32x8d (torchvision's ``resnext101_32x8d`` without the classifier)."""
    return ResNet(
        101,
        groups=32,
        width_per_group=8,
        norm=norm,
        frozen_stages=frozen_stages,
        base_width=base_width,
    )
