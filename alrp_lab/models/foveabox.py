"""FoveaBox (Kong et al., 2020): an anchor-free dense detector, Table 7 of the paper.

FoveaBox is RetinaNet with one prior per feature location instead of anchors, the fovea
assignment (``alrp_lab.assigners.FoveaAssigner``) and box targets coded as log distances from
the location to the box sides in units of the level's base edge (mmdetection's
``FoveaHead``, which the aLRP authors trained). To share RetinaNet's head, loss and
post-processing unchanged, each location's prior is represented as a box: the square of
side ``2 * base_edge`` centred on the location, which is exactly what zero deltas decode to.
``FoveaBoxCoder`` maps deltas to boxes and back against these priors, so
``DenseDetectionLoss`` and ``postprocess_image`` treat them like anchors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alrp_lab.assigners.fovea import FoveaAssigner
from alrp_lab.models.dense_loss import DenseDetectionLoss
from alrp_lab.models.fpn import FPN
from alrp_lab.models.parts import (
    BackboneConfig,
    DetectorConfig,
    build_backbone_fpn,
)
from alrp_lab.models.postprocess import TestConfig
from alrp_lab.models.retinanet import RetinaHead, RetinaNet, build_dense_parts
from alrp_lab.ops.box_coder import DEFAULT_WH_CLIP

__all__ = [
    "FOVEA_BASE_EDGES",
    "FOVEA_SCALE_RANGES",
    "FOVEA_STRIDES",
    "FoveaBox",
    "FoveaBoxCoder",
    "FoveaPriorGenerator",
    "FoveaBoxConfig",
    "build_foveabox",
]

# mmdetection's FoveaBox settings for P3..P7, which the aLRP authors used.
FOVEA_STRIDES = (8, 16, 32, 64, 128)
FOVEA_BASE_EDGES = (16, 32, 64, 128, 256)
FOVEA_SCALE_RANGES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))


class FoveaBoxCoder:
    """FoveaBox's box coding against location priors.

    A prior ``(px - b, py - b, px + b, py + b)`` stands for the location (px, py) of a level
    with base edge b. A box (x1, y1, x2, y2) is coded as

        log(clamp(((px - x1) / b, (py - y1) / b, (x2 - px) / b, (y2 - py) / b), 1/16, 16)),

    and deltas d decode to ``(px - b e^d0, py - b e^d1, px + b e^d2, py + b e^d3)``.

    Args:
        min_ratio, max_ratio: the clamp of the distances (in base edges) before the log,
            mmdetection's (1/16, 16); it also keeps the log finite for a location outside
            its box (possible at the image border, see ``FoveaAssigner``).
        log_clip: ``decode`` clamps the deltas to ``[-log_clip, log_clip]`` so that wild
            early predictions stay finite; well outside the targets' range, so it never
            stops a gradient that training needs.
    """

    def __init__(
        self,
        min_ratio: float = 1.0 / 16,
        max_ratio: float = 16.0,
        log_clip: float = DEFAULT_WH_CLIP,
    ) -> None:
        if not 0 < min_ratio < max_ratio:
            raise ValueError(
                f"FoveaBoxCoder needs 0 < min_ratio < max_ratio, got {min_ratio}, {max_ratio}"
            )
        if not log_clip >= math.log(max_ratio):
            raise ValueError(
                f"FoveaBoxCoder log_clip ({log_clip}) must be >= log(max_ratio) "
                f"({math.log(max_ratio):.4f}), or decoding could not reach every target"
            )
        self.min_ratio = float(min_ratio)
        self.max_ratio = float(max_ratio)
        self.log_clip = float(log_clip)

    def __repr__(self) -> str:
        return (
            f"FoveaBoxCoder(min_ratio={self.min_ratio}, max_ratio={self.max_ratio}, "
            f"log_clip={self.log_clip:.4f})"
        )

    @staticmethod
    def _point_and_edge(priors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., 4) priors -> centre x (...), centre y (...), base edge (...)."""
        x1, y1, x2, y2 = priors.unbind(-1)
        return (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas that decode to ``boxes`` from the locations of ``anchors``.

        Args:
            boxes: (..., 4) target boxes (x1, y1, x2, y2).
            anchors: (..., 4) location priors, broadcastable against ``boxes``.

        Returns:
            (..., 4) deltas (left, top, right, bottom), the broadcast shape.
        """
        px, py, edge = self._point_and_edge(anchors.to(boxes.dtype))
        x1, y1, x2, y2 = boxes.unbind(-1)
        distances = torch.stack((px - x1, py - y1, x2 - px, y2 - py), dim=-1) / edge[..., None]
        return distances.clamp(min=self.min_ratio, max=self.max_ratio).log()

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes that ``deltas`` make from the locations of ``anchors``; differentiable.

        Args:
            deltas: (..., 4) log distances (left, top, right, bottom) in base edges.
            anchors: (..., 4) location priors, broadcastable against ``deltas``.

        Returns:
            (..., 4) boxes (x1, y1, x2, y2), the broadcast shape.
        """
        px, py, edge = self._point_and_edge(anchors.to(deltas.dtype))
        reach = deltas.clamp(min=-self.log_clip, max=self.log_clip).exp() * edge[..., None]
        left, top, right, bottom = reach.unbind(-1)
        return torch.stack((px - left, py - top, px + right, py + bottom), dim=-1)


class FoveaPriorGenerator:
    """One prior per feature location: the box of side ``2 * base_edge`` centred on it.

    Location (i, j) of level l is the pixel point ((j + 0.5) s_l, (i + 0.5) s_l), the
    centre of its cell (mmdetection's FoveaHead; RetinaNet's anchors sit on the cell corner).

    Args:
        strides: pixel stride of each level.
        base_edges: the base edge of each level (the unit of its box targets).

    ``__call__(feature_sizes, device, dtype)`` returns one ``(H_l * W_l, 4)`` tensor per
    level, rows in (y, x) order like ``RetinaHead``'s output with one anchor per location.
    """

    num_anchors_per_location = 1

    def __init__(
        self,
        strides: Sequence[int] = FOVEA_STRIDES,
        base_edges: Sequence[float] = FOVEA_BASE_EDGES,
    ) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.base_edges = tuple(float(b) for b in base_edges)
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"FoveaBox strides must be positive, got {tuple(strides)}")
        if len(self.base_edges) != len(self.strides) or min(self.base_edges) <= 0:
            raise ValueError(
                f"FoveaBox needs one positive base edge per stride: strides {self.strides}, "
                f"base_edge_list {tuple(base_edges)}"
            )

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def __repr__(self) -> str:
        return f"FoveaPriorGenerator(strides={self.strides}, base_edges={self.base_edges})"

    def __call__(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"got {len(feature_sizes)} feature maps for {self.num_levels} FoveaBox levels"
            )
        priors = []
        for (height, width), stride, edge in zip(
            feature_sizes, self.strides, self.base_edges, strict=True
        ):
            ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride
            xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 4)
            priors.append(centres + centres.new_tensor((-edge, -edge, edge, edge)))
        return priors


class FoveaBox(RetinaNet):
    """FoveaBox: backbone -> FPN -> a one-prior-per-location head, trained by a dense loss.

    The forward contract is RetinaNet's (see ``RetinaNet.forward``): losses ``loss``,
    ``loss_cls``, ``loss_loc``, ``num_pos`` (and aLRP's ``eloc_mean``, ``eloc_over_one``)
    in training, per-image ``boxes``, ``scores``,
    ``labels`` in eval; ``grad_balance()`` and ``self_balance`` likewise.

    Args:
        backbone, fpn, num_classes, head, test_cfg: as for ``RetinaNet`` (the head has one
            anchor per location).
        prior_generator: the locations' priors (kept as ``anchor_generator``).
        assigner: a ``FoveaAssigner`` with the prior generator's strides.
        loss: a ``DenseDetectionLoss`` whose box coder is a ``FoveaBoxCoder``.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        fpn: FPN,
        num_classes: int,
        head: RetinaHead | Mapping[str, Any] | None,
        prior_generator: FoveaPriorGenerator,
        assigner: FoveaAssigner,
        loss: DenseDetectionLoss,
        test_cfg: TestConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if tuple(float(s) for s in prior_generator.strides) != assigner.strides:
            raise ValueError(
                f"the priors' strides {prior_generator.strides} and the assigner's "
                f"{assigner.strides} differ; FoveaBox needs one list of strides"
            )
        if not isinstance(loss.box_coder, FoveaBoxCoder):
            raise ValueError(
                "FoveaBox's loss must code boxes with FoveaBoxCoder (pass box_coder="
                f"FoveaBoxCoder() to DenseDetectionLoss), got {type(loss.box_coder).__name__}"
            )
        super().__init__(
            backbone, fpn, num_classes, head, prior_generator, assigner, loss, test_cfg
        )

    def forward(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor | int] | list[dict[str, Tensor]]:
        """See ``RetinaNet.forward``: losses in training mode, detections in eval mode."""
        if self.training and targets is None:
            raise ValueError(
                "FoveaBox in training mode needs targets; call model.eval() for detections"
            )
        return super().forward(images, targets, image_sizes)


@dataclass
class FoveaBoxConfig(DetectorConfig):
    """``conf/detector/foveabox.yaml``: the common keys and FoveaBox's assignment."""

    # A box is positive at its level's locations inside the box shrunk to sigma of its size.
    sigma: float
    strides: list[int]
    # One [low, high] object scale range per level. list[Any]: OmegaConf rejects ints inside
    # a list[list[float]] (e.g. [[1, 64]]); build_foveabox checks the lengths.
    scale_ranges: list[Any]
    base_edge_list: list[float]


def build_foveabox(
    num_classes: int,
    *,
    backbone: BackboneConfig,
    detector: FoveaBoxConfig,
    loss: Any,
    box_error: Any,
    assigner: Any,
    track_grad_balance: bool = False,
) -> FoveaBox:
    """FoveaBox as the paper trains it (Table 7), from its config sections, each taken whole.

    Read by their YAML keys like ``build_retinanet``'s. ``assigner`` is unused: FoveaBox
    assigns by its fovea (``detector.sigma``). The paper's settings (sigma 0.4, the ranges
    and base edges of P3..P7 of mmdetection's FoveaHead; Focal Loss gamma 1.5 and alpha 0.4,
    smooth L1 beta 0.11 for the baselines) are those of ``conf/detector/foveabox.yaml`` and
    the Table 7 sweep.
    """
    strides = list(detector.strides)
    levels = len(strides)
    if len(detector.scale_ranges) != levels or len(detector.base_edge_list) != levels:
        raise ValueError(
            f"FoveaBox needs one scale range and one base edge per stride: {levels} strides, "
            f"{len(detector.scale_ranges)} scale_ranges, {len(detector.base_edge_list)} "
            "base_edge_list entries"
        )
    backbone_net, fpn = build_backbone_fpn(
        backbone, fpn_channels=detector.fpn_channels, num_outs=levels, fpn_extra="c5"
    )
    priors = FoveaPriorGenerator(strides, detector.base_edge_list)
    fovea_assigner = FoveaAssigner(strides, detector.scale_ranges, detector.sigma)
    parts = build_dense_parts(
        num_classes,
        priors.num_anchors_per_location,
        FoveaBoxCoder(),
        detector=detector,
        loss=loss,
        box_error=box_error,
        track_grad_balance=track_grad_balance,
        # mmdetection's FoveaHead divides its Focal Loss by positives + images.
        score_normalizer="positives+images",
    )
    return FoveaBox(
        backbone_net,
        fpn,
        num_classes,
        parts.head,
        priors,
        fovea_assigner,
        parts.loss,
        parts.test_cfg,
    )
