"""RoIAlign (He et al., 2017) in pure torch, with torchvision's kernel as a fast path.

Semantics are those of ``torchvision.ops.roi_align`` (and mmcv's ``RoIAlign``): a RoI
``(b, x1, y1, x2, y2)`` in image pixels is scaled by ``spatial_scale`` and, with
``aligned=True``, shifted by half a pixel so that feature cell ``i`` covers
``[i - 0.5, i + 0.5)`` of the scaled image. Each of the ``out_h x out_w`` bins averages a
regular ``g_h x g_w`` grid of bilinear samples placed at the centres of the grid's cells;
``sampling_ratio <= 0`` picks ``g = ceil(bin size)`` per RoI (adaptive). A sample with
``y < -1`` or ``y > H`` (likewise ``x``) counts as 0; one in ``[-1, 0]`` or ``[H - 1, H]``
reads the border row, exactly as the C++/CUDA kernels do.

The pure version samples with ``F.grid_sample`` (``padding_mode="border"`` is that border
rule), one call per (image, grid size) group, so it is vectorised over RoIs and its
gradient with respect to the features comes from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    from torchvision.ops import roi_align as _torchvision_roi_align
except Exception:  # absent, or built for another torch (its C++ ops then fail to load)
    _torchvision_roi_align = None

__all__ = ["roi_align", "roi_align_torch"]


def _pair(output_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"roi_align output_size must be an int or (h, w) >= 1, got {output_size}")
    return size  # type: ignore[return-value]


def _check_inputs(features: Tensor, rois: Tensor, spatial_scale: float) -> None:
    if features.dim() != 4:
        raise ValueError(f"roi_align needs features (N, C, H, W), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"roi_align needs floating-point features, got {features.dtype}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"roi_align needs rois (K, 5) = (batch index, x1, y1, x2, y2), got "
            f"{tuple(rois.shape)}; prepend each box's image index"
        )
    if rois.device != features.device:
        raise ValueError(
            f"rois are on {rois.device} but features on {features.device}; move both to one device"
        )
    if not spatial_scale > 0:
        raise ValueError(f"roi_align spatial_scale must be positive, got {spatial_scale}")


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
    *,
    use_torchvision: bool = True,
) -> Tensor:
    """Pool a fixed-size feature patch for every RoI.

    Args:
        features: (N, C, H, W) feature maps of a batch.
        rois: (K, 5) rows ``(batch index, x1, y1, x2, y2)`` in image pixels.
        output_size: ``out`` or ``(out_h, out_w)`` bins per RoI.
        spatial_scale: feature cells per image pixel (1 / stride of the level).
        sampling_ratio: samples per bin along each axis; ``<= 0`` is adaptive
            (``ceil(bin size)`` per RoI, mmdetection's ``sample_num=0``).
        aligned: half-pixel shift (True) as in Detectron2 / mmcv; False is the original
            Mask R-CNN rule (no shift, RoI sides at least 1 cell).
        use_torchvision: use torchvision's kernel when it is importable (tests switch it off).

    Returns:
        (K, C, out_h, out_w) pooled features, differentiable in ``features``.
    """
    out_h, out_w = _pair(output_size)
    _check_inputs(features, rois, spatial_scale)
    if use_torchvision and _torchvision_roi_align is not None:
        # The kernel takes the boxes in the features' dtype: reduced-precision features are
        # pooled in float32 so that the boxes are not rounded (see roi_align_torch).
        work = _sampling_dtype(features.dtype)
        return _torchvision_roi_align(
            features.to(work),
            rois.to(work),
            (out_h, out_w),
            float(spatial_scale),
            int(sampling_ratio),
            bool(aligned),
        ).to(features.dtype)
    return roi_align_torch(features, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned)


def _sampling_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype boxes and samples are computed in: float32 or wider.

    bfloat16 keeps 8 significant bits, so a box at x = 700 px would move in steps of 4 px and
    float16's 11 bits in steps of 0.5 px; mixed precision must not move the RoIs.
    """
    return torch.promote_types(dtype, torch.float32)


def _sample_positions(start: Tensor, bin_size: Tensor, bins: int, grid: int) -> Tensor:
    """Sample coordinates along one axis, at the centres of a grid's cells in every bin.

    Args:
        start: (n,) first edge of the RoIs (feature-cell units).
        bin_size: (n,) bin extent.
        bins: bins along the axis; grid: samples per bin.

    Returns:
        (n, bins * grid) coordinates ordered (bin, sample).
    """
    dtype, device = start.dtype, start.device
    steps = (
        torch.arange(bins, dtype=dtype, device=device)[:, None]
        + (torch.arange(grid, dtype=dtype, device=device)[None, :] + 0.5) / grid
    )
    return start[:, None] + steps.reshape(1, -1) * bin_size[:, None]


def roi_align_torch(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """The pure-torch RoIAlign behind :func:`roi_align` (same arguments and result)."""
    out_h, out_w = _pair(output_size)
    _check_inputs(features, rois, spatial_scale)
    num_rois = rois.shape[0]
    _, channels, height, width = features.shape
    out_dtype = features.dtype
    if num_rois == 0:
        return features.new_zeros(0, channels, out_h, out_w)

    # Reduced-precision features (bf16 / fp16 under AMP) are sampled in float32 and the
    # result cast back: the boxes must not be rounded to the features' precision.
    dtype = _sampling_dtype(out_dtype)
    features = features.to(dtype)
    rois = rois.detach().to(dtype)
    batch_index = rois[:, 0].round().long()
    if batch_index.min() < 0 or batch_index.max() >= features.shape[0]:
        raise ValueError(
            f"roi batch indices must lie in 0..{features.shape[0] - 1}, got "
            f"{batch_index.min().item()}..{batch_index.max().item()}"
        )
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_w = roi_w / out_w
    bin_h = roi_h / out_h
    if sampling_ratio > 0:
        grid_h = torch.full_like(batch_index, int(sampling_ratio))
        grid_w = grid_h
    else:
        # A RoI of zero or negative size gets no samples: its output is 0, as in the kernels.
        grid_h = torch.ceil(bin_h).long().clamp(min=0)
        grid_w = torch.ceil(bin_w).long().clamp(min=0)

    keys = torch.stack((batch_index, grid_h, grid_w), dim=1)
    groups, group_of_roi = torch.unique(keys, dim=0, return_inverse=True)
    indices, pooled = [], []
    for g, (b, gh, gw) in enumerate(groups.tolist()):
        if gh == 0 or gw == 0:
            continue
        idx = (group_of_roi == g).nonzero().squeeze(1)
        n = idx.numel()
        ys = _sample_positions(y1[idx], bin_h[idx], out_h, gh)  # (n, out_h * gh)
        xs = _sample_positions(x1[idx], bin_w[idx], out_w, gw)  # (n, out_w * gw)
        valid_y = (ys >= -1.0) & (ys <= height)
        valid_x = (xs >= -1.0) & (xs <= width)
        valid = valid_y[:, :, None] & valid_x[:, None, :]  # (n, out_h * gh, out_w * gw)
        # grid_sample's align_corners=False maps cell index p to (2p + 1) / size - 1; the
        # border padding then clamps p to [0, size - 1], the kernels' rule for [-1, 0].
        gx = ((2.0 * xs + 1.0) / width - 1.0)[:, None, :].expand(n, out_h * gh, out_w * gw)
        gy = ((2.0 * ys + 1.0) / height - 1.0)[:, :, None].expand(n, out_h * gh, out_w * gw)
        grid = torch.stack((gx, gy), dim=-1).reshape(1, n * out_h * gh, out_w * gw, 2)
        samples = F.grid_sample(
            features[b : b + 1], grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (1, C, n * out_h * gh, out_w * gw)
        samples = samples.view(channels, n, out_h * gh, out_w * gw) * valid.to(dtype)
        samples = samples.view(channels, n, out_h, gh, out_w, gw)
        pooled.append((samples.sum(dim=(3, 5)) / (gh * gw)).permute(1, 0, 2, 3))
        indices.append(idx)
    out = features.new_zeros(num_rois, channels, out_h, out_w)
    if pooled:
        out = out.index_copy(0, torch.cat(indices), torch.cat(pooled))
    return out.to(out_dtype)
