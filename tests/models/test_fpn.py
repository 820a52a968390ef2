"""FPN: output shapes, extra-level inputs, top-down path."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.models.fpn import FPN


def _inputs(sizes=((16, 20), (8, 10), (4, 5)), channels=(8, 16, 32)):
    return [torch.randn(2, c, h, w) for c, (h, w) in zip(channels, sizes, strict=True)]


@pytest.mark.parametrize("extra", ["c5", "p5"])
def test_p3_to_p7_shapes(extra: str) -> None:
    fpn = FPN([8, 16, 32], out_channels=12, num_outs=5, extra=extra)
    outs = fpn(_inputs())
    assert [tuple(o.shape) for o in outs] == [
        (2, 12, 16, 20),
        (2, 12, 8, 10),
        (2, 12, 4, 5),
        (2, 12, 2, 3),
        (2, 12, 1, 2),
    ]


def test_extra_input_choice() -> None:
    assert FPN([8, 16, 32], 12, extra="c5").extra_convs[0].in_channels == 32
    assert FPN([8, 16, 32], 12, extra="p5").extra_convs[0].in_channels == 12
    assert len(FPN([8, 16, 32], 12, num_outs=3).extra_convs) == 0


def test_odd_sizes_and_top_down_reaches_p3() -> None:
    fpn = FPN([8, 16, 32], out_channels=4, num_outs=5)
    inputs = _inputs(sizes=((15, 9), (8, 5), (4, 3)))
    c5 = inputs[2].requires_grad_()
    outs = fpn(inputs)
    assert outs[0].shape[-2:] == (15, 9)
    outs[0].sum().backward()  # P3 depends on C5 through the top-down path
    assert c5.grad is not None and c5.grad.abs().sum() > 0


def test_p7_takes_relu_of_p6() -> None:
    fpn = FPN([8, 16, 32], out_channels=4, num_outs=5, extra="c5")
    inputs = _inputs()
    outs = fpn(inputs)
    p6 = fpn.extra_convs[0](inputs[-1])
    torch.testing.assert_close(outs[3], p6)
    torch.testing.assert_close(outs[4], fpn.extra_convs[1](torch.relu(p6)))


def test_pool_extras_are_strided_max_pools_without_parameters() -> None:
    # mmdetection's FPN without extra convolutions (its Faster R-CNN): P6 = max_pool(P5, 1, 2).
    fpn = FPN([8, 16, 32, 64], out_channels=4, num_outs=6, extra="pool")
    plain = FPN([8, 16, 32, 64], out_channels=4, num_outs=4)
    assert len(fpn.extra_convs) == 0
    plain.load_state_dict(fpn.state_dict())
    inputs = _inputs(sizes=((20, 18), (10, 9), (5, 5), (3, 3)), channels=(8, 16, 32, 64))
    outs, base = fpn(inputs), plain(inputs)
    assert len(outs) == 6
    for got, expected in zip(outs, base, strict=False):
        torch.testing.assert_close(got, expected)
    # Every other element of the level above, by hand; odd sizes round up (3 -> 2 -> 1).
    torch.testing.assert_close(outs[4], base[3][:, :, ::2, ::2])
    torch.testing.assert_close(outs[5], outs[4][:, :, ::2, ::2])
    assert outs[4].shape[-2:] == (2, 2) and outs[5].shape[-2:] == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_outs": 2}, {"extra": "p6"}, {"in_channels": []}],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FPN(**{"in_channels": [8, 16, 32], **kwargs})
