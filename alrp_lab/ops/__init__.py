"""Detection primitives in pure torch: box algebra, delta coding, anchors, NMS, RoIAlign, and
the ranking losses' search of many scores into few sorted edges."""

from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    clip_boxes_to_image,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
)
from alrp_lab.ops.nms import batched_nms, nms
from alrp_lab.ops.roi_align import roi_align
from alrp_lab.ops.search import searchsorted_right

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "batched_nms",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "clip_boxes_to_image",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "nms",
    "roi_align",
    "searchsorted_right",
]
