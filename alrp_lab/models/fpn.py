"""Feature pyramid network (Lin et al., 2017) with extra coarser levels: RetinaNet's
convolutions (P6, P7) or Faster R-CNN's max-pooling (P6)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN"]

_EXTRAS = ("c5", "p5", "pool")


class FPN(nn.Module):
    """Top-down pyramid over backbone maps, plus stride-2 extra levels.

    Args:
        in_channels: channels of the inputs, finest first (RetinaNet: C3, C4, C5).
        out_channels: channels of every output level.
        num_outs: number of outputs; the ones beyond ``len(in_channels)`` are extra levels
            (5 for RetinaNet: P3..P7).
        extra: how the extra levels are made. ``"c5"``: a stride-2 convolution of the last
            backbone map (as in the RetinaNet paper and the aLRP Loss configs); ``"p5"``: of
            the last pyramid output. Later extras take ``relu`` of the previous one
            (P7 = conv(relu(P6))). ``"pool"``: each extra is the previous level subsampled
            by a 1x1 max-pool of stride 2, with no parameters (mmdetection's FPN without
            extra convolutions, as its Faster R-CNN builds P6).

    ``forward([C3 (B, c3, H, W), C4 (B, c4, H/2, W/2), C5 ...]) -> [P3 (B, out, H, W), ...,
    P7 (B, out, ~H/16, ~W/16)]``; each extra halves the previous size (rounded up).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int = 256,
        num_outs: int = 5,
        extra: str = "c5",
    ) -> None:
        super().__init__()
        if len(in_channels) == 0:
            raise ValueError("FPN needs at least one input level")
        if num_outs < len(in_channels):
            raise ValueError(
                f"num_outs ({num_outs}) must be at least the number of inputs ({len(in_channels)})"
            )
        if extra not in _EXTRAS:
            raise ValueError(f"unknown FPN extra {extra!r}; choose one of {_EXTRAS}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.extra = extra
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        extra_convs = []
        for i in range(0 if extra == "pool" else num_outs - len(in_channels)):
            in_ch = in_channels[-1] if (i == 0 and extra == "c5") else out_channels
            extra_convs.append(nn.Conv2d(in_ch, out_channels, 3, stride=2, padding=1))
        self.extra_convs = nn.ModuleList(extra_convs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        """inputs: one (B, in_channels[i], H_i, W_i) map per level -> num_outs maps."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} inputs, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            # Resize to the exact finer size: odd input sizes do not halve evenly.
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]
        if self.extra == "pool":
            while len(outs) < self.num_outs:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return outs
        for i, conv in enumerate(self.extra_convs):
            if i == 0:
                outs.append(conv(inputs[-1] if self.extra == "c5" else outs[-1]))
            else:
                outs.append(conv(F.relu(outs[-1])))
        return outs
