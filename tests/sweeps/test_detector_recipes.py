"""Tables 7 and 8 as composed: every job carries the authors' settings for its detector
(kemaloksuz/aLRPLoss ``configs/alrp_loss/``), at both scales, down to the built model.

The paper scale is built with random weights (``backbone.weights=null``): only the
architecture and the losses are checked, not the weights file the scale requires.
"""

from __future__ import annotations

import pytest

from alrp_lab.config.compose import compose_config
from alrp_lab.engine.builders import build_model
from alrp_lab.sweeps.definition import load_sweep
from alrp_lab.sweeps.runner import expand_jobs

PAPER_USER = ["data.root=/data/coco", "backbone.weights=/weights/resnet50.pth"]
NUM_CLASSES = 80


def _jobs(sweep: str, scale: str) -> dict[str, list[str]]:
    user = PAPER_USER if scale == "paper" else []
    return {j.id: j.overrides for j in expand_jobs(load_sweep(sweep), scale, user, seeds=1)}


def _model(overrides: list[str]):
    cfg = compose_config([*overrides, "backbone.weights=null"])
    return cfg, build_model(cfg, num_classes=NUM_CLASSES)


def _check_test_settings(cfg) -> None:
    # SPEC section 4 (both detectors' test_cfg): score 0.05, NMS 0.5, 100 detections.
    assert (cfg.detector.score_thr, cfg.detector.nms_iou) == (0.05, 0.5)
    assert cfg.detector.max_per_img == 100


def _built_jobs(sweep: str, scale: str, job_ids: set[str]):
    """(job id, config, model) of every job of ``sweep`` at ``scale``, which must be
    ``job_ids``; each job's test-time settings checked on the way."""
    jobs = _jobs(sweep, scale)
    assert set(jobs) == job_ids
    for job_id, overrides in jobs.items():
        cfg, model = _model(overrides)
        _check_test_settings(cfg)
        yield job_id, cfg, model


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_table7_foveabox_rows_carry_the_authors_losses(scale: str) -> None:
    lrs = {"focal-sl1": 0.02, "ap-sl1": 0.002, "alrp": 0.008}
    for job_id, cfg, model in _built_jobs("table7", scale, set(lrs)):
        assert cfg.detector.name == "foveabox", job_id
        assert model.assigner.sigma == 0.4, job_id
        loss = model.loss
        if scale == "paper":
            assert cfg.train.lr == lrs[job_id] and cfg.train.batch_size == 32, job_id
            assert list(cfg.train.lr_steps) == [75, 95] and cfg.train.epochs == 100, job_id
            assert cfg.detector.head_convs == 4 and cfg.detector.head_channels == 256, job_id
        if job_id == "focal-sl1":
            # fovea_r50_fpn_4x4_100e_coco500.py: FocalLoss(gamma 1.5, alpha 0.4), divided by
            # positives + images (FoveaHead); SmoothL1Loss(beta 0.11), the 4 coordinates summed.
            assert loss.cls_loss == "focal" and loss.score_normalizer == "positives+images"
            assert (loss._score_loss.gamma, loss._score_loss.alpha) == (1.5, 0.4)
            assert loss.box_error.beta == pytest.approx(0.11)
            assert loss.box_error.coord_reduction == "sum"
            assert model.self_balance.value == 1.0 and not model.self_balance.enabled
        elif job_id == "ap-sl1":
            # ap_loss_fovea: AP Loss, smooth L1 (beta 0.11) averaged over the 4 coordinates.
            assert loss.cls_loss == "ap" and loss.box_error.beta == pytest.approx(0.11)
            assert loss.box_error.coord_reduction == "mean"
            assert model.self_balance.value == 1.0 and not model.self_balance.enabled
        else:
            # alrp_loss_fovea: aLRP Loss with GIoU and self-balance from 50.
            assert loss.cls_loss == "alrp" and type(loss.box_error).__name__ == "GIoUError"
            assert model.self_balance.enabled and model.self_balance.value == 50.0


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_table8_faster_rcnn_rows_carry_the_authors_settings(scale: str) -> None:
    lrs = {"ce-l1": 0.04, "ce-giou": 0.04, "alrp": 0.012}
    for job_id, cfg, model in _built_jobs("table8", scale, set(lrs)):
        proposals = model.rpn.proposal_cfg
        # Both configs: the top 2000 anchors per level before the RPN's NMS in training,
        # 1000 at test time; NMS 0.7; RPN assigner 0.7 / 0.3.
        assert (proposals.train_pre_nms_topk, proposals.pre_nms_topk) == (2000, 1000), job_id
        assert proposals.nms_iou == 0.7 and model.rpn.assigner.pos_iou == 0.7, job_id
        # mmdetection's FPN for Faster R-CNN max-pools its extra level; RoIs positive at 0.5.
        assert model.fpn.extra == "pool" and cfg.detector.roi_pos_iou == 0.5, job_id
        if scale == "paper":
            # P2..P6 with anchors 32..512 px, 256-channel RPN head, 1000 proposals, FC 1024.
            assert model.backbone.with_c2, job_id
            assert model.rpn.anchor_generator.strides == (4, 8, 16, 32, 64), job_id
            assert model.roi_head.extractor.strides == (4, 8, 16, 32), job_id
            assert cfg.detector.octave_base_scale == 8, job_id
            assert cfg.detector.head_channels == 256 and cfg.detector.fpn_channels == 256
            assert cfg.detector.roi_fc_channels == 1024, job_id
            assert proposals.num_proposals == 1000, job_id
            assert cfg.train.lr == lrs[job_id] and cfg.train.batch_size == 32, job_id
            assert list(cfg.train.lr_steps) == [75, 95] and cfg.train.epochs == 100, job_id
        else:
            assert not model.backbone.with_c2, job_id
            assert model.rpn.anchor_generator.strides == (8, 16, 32, 64, 128), job_id
            assert proposals.num_proposals == 100, job_id
        roi_loss = model.roi_head.loss
        if job_id == "alrp":
            # alrp_loss_faster_rcnn: aLRP on both stages, the RPN's weighted 0.2 with tau 0.7
            # and its own SB; the PseudoSampler: no sampling, no ground truth as proposals.
            assert model.rpn_weight == 0.2 and model.rpn.loss.box_error.tau == 0.7
            assert type(roi_loss.box_error).__name__ == "GIoUError"
            assert model.self_balance is not model.rpn_self_balance
            assert model.self_balance.enabled and model.rpn_self_balance.enabled
            assert model.self_balance.value == model.rpn_self_balance.value == 50.0
            assert model.roi_head.sampler is None and model.rpn.loss.sampler is None
            # The paper scale keeps the authors' choice; the cpu scale adds the ground
            # truths (from scratch the RoI stage does not start without them).
            assert model.roi_head.add_gt_as_proposals == (scale == "cpu")
        else:
            # faster_rcnn(_giou): RPN CE + L1 on 256 anchors, RoI CE on sampled RoIs with the
            # ground truths added; GIoU weighted by 10, L1 by 1.
            assert model.rpn_weight == 1.0 and model.rpn.loss.sampler.num == 256
            assert model.roi_head.add_gt_as_proposals
            assert model.roi_head.sampler.num == (512 if scale == "paper" else 64)
            assert model.roi_head.sampler.pos_fraction == 0.25
            error = type(roi_loss.box_error).__name__
            weight = model.self_balance
            assert not weight.enabled, job_id
            if job_id == "ce-giou":
                assert error == "GIoUError" and weight.value == 10.0
            else:
                assert error == "L1Error" and weight.value == 1.0


# conf/experiment/ (one file per authors' config) against the same row of the paper scale.
EXPERIMENTS = {
    "fovea_r50_fpn_4x4_100e_coco500": ("table7", "focal-sl1"),
    "ap_loss_fovea_r50_fpn_4x4_100e_coco500": ("table7", "ap-sl1"),
    "alrp_loss_fovea_r50_fpn_4x4_100e_coco500": ("table7", "alrp"),
    "faster_rcnn_r50_fpn_100e_coco500": ("table8", "ce-l1"),
    "faster_rcnn_r50_fpn_giou_100e_coco500": ("table8", "ce-giou"),
    "alrp_loss_faster_rcnn_r50_fpn_100e_coco500": ("table8", "alrp"),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_configs_train_what_the_paper_scale_rows_train(experiment: str) -> None:
    # The authors' settings live in two places, an experiment file and the sweep's paper
    # scale; they must not drift apart.
    sweep, job_id = EXPERIMENTS[experiment]
    own = compose_config([f"experiment={experiment}", *PAPER_USER])
    row = compose_config(_jobs(sweep, "paper")[job_id])
    for section in ("detector", "loss", "box_error", "backbone"):
        assert own[section] == row[section], (experiment, section)
    for key in ("batch_size", "lr", "epochs", "lr_steps", "warmup_iters", "grad_clip"):
        assert own.train[key] == row.train[key], (experiment, key)
    assert own.data.train_size == row.data.train_size == 512
