"""The toy example of Figure 1 / Appendix A (SPEC section 2): aLRP and AP Loss columns.

Ten anchors scored 1.0, 0.9, ..., 0.1; positives a1, a3, a6, a10; the hard step (delta = 0).
"""

from __future__ import annotations

import pytest
import torch

from alrp_lab.losses import alrp_loss, ap_loss

SCORES = torch.tensor([1.0 - 0.1 * k for k in range(10)], dtype=torch.float64)
LABELS = torch.tensor([1, 0, 1, 0, 0, 1, 0, 0, 0, 1])
IOUS = {
    "C&R1": [0.95, 0.80, 0.65, 0.50],
    "C&R2": [0.80, 0.65, 0.50, 0.80],
    "C&R3": [0.50, 0.65, 0.80, 0.95],
}
# SPEC section 2 (C&R2 corrected from the paper's 0.69 to 0.70).
EXPECTED = {"C&R1": (0.5300, 0.1717), "C&R2": (0.7000, 0.3417), "C&R3": (0.8925, 0.5342)}


def _loc_errors(ious: list[float]) -> torch.Tensor:
    return (1 - torch.tensor(ious, dtype=torch.float64)) / (1 - 0.5)


@pytest.mark.parametrize("output", ["C&R1", "C&R2", "C&R3"])
def test_alrp_columns(output: str) -> None:
    out = alrp_loss(SCORES, LABELS, _loc_errors(IOUS[output]), delta=0.0)
    total, loc = EXPECTED[output]
    # FP = (0, 1, 3, 6) and rank = (1, 3, 6, 10): L_cls = (0 + 1/3 + 1/2 + 3/5) / 4 = 43/120.
    assert out.cls.item() == pytest.approx(43 / 120, abs=1e-12)
    assert round(out.cls.item(), 4) == 0.3583
    assert round(out.loc.item(), 4) == loc
    assert round(out.cls.item() + out.loc.item(), 4) == total


def test_alrp_loc_exact_for_cr1() -> None:
    # Eloc = (0.1, 0.4, 0.7, 1.0); cum = (0.1, 0.5, 1.2, 2.2) over ranks (1, 3, 6, 10).
    out = alrp_loss(SCORES, LABELS, _loc_errors(IOUS["C&R1"]), delta=0.0)
    assert out.loc.item() == pytest.approx((0.1 + 0.5 / 3 + 1.2 / 6 + 2.2 / 10) / 4, abs=1e-12)


def test_ap_loss_column() -> None:
    # Precisions 1, 2/3, 1/2, 2/5: 1 - mean = 43/120 = 0.3583, which Figure 1c rounds to 0.36.
    loss = ap_loss(SCORES, LABELS, delta=0.0)
    assert loss.item() == pytest.approx(43 / 120, abs=1e-12)
    assert round(loss.item(), 2) == 0.36


def test_alrp_with_figure_1a_ious_for_cr2() -> None:
    """Figure 1a gives a10 an IoU of 0.95 in R2, not the 0.80 of SPEC section 2.

    With 0.95 the loss is the paper's printed 0.69 (its own working in Figure 1a:
    0.4 + 0.7 + 0.85 + 0.82 = 2.77 / 4 = 0.6925): L_loc = (0.4 + 1.1/3 + 2.1/6 + 2.2/10) / 4.
    """
    out = alrp_loss(SCORES, LABELS, _loc_errors([0.80, 0.65, 0.50, 0.95]), delta=0.0)
    assert out.loc.item() == pytest.approx((0.4 + 1.1 / 3 + 2.1 / 6 + 2.2 / 10) / 4, abs=1e-12)
    assert (out.cls + out.loc).item() == pytest.approx(0.6925, abs=1e-12)
