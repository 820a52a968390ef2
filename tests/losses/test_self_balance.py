import math

import pytest
import torch

from alrp_lab.losses.self_balance import SelfBalance


def test_starts_at_init_as_a_persistent_float64_buffer():
    sb = SelfBalance()
    assert sb.value == 50.0
    assert sb.weight.dtype == torch.float64
    assert list(sb.state_dict()) == ["weight"]  # the epoch sums are not buffers


def test_epoch_update_uses_the_epoch_means():
    sb = SelfBalance(init=50.0)
    sb.update(1.0, 0.5)
    sb.update(torch.tensor(0.5), torch.tensor(0.25, dtype=torch.float64))
    cls_loss = torch.tensor(0.9, dtype=torch.float64, requires_grad=True) * 1
    sb.update(cls_loss, torch.tensor([0.15], dtype=torch.float64))
    # mean cls = 2.4 / 3 = 0.8, mean loc = 0.9 / 3 = 0.3: (0.8 + 0.3) / 0.3.
    assert sb.step_epoch() == pytest.approx(11.0 / 3.0, rel=1e-12)
    assert sb.count == 0 and sb.sum_cls == 0.0 and sb.sum_loc == 0.0
    # Only the next epoch's iterations count.
    sb.update(1.0, 1.0)
    assert sb.step_epoch() == pytest.approx(2.0)


def test_epoch_without_iterations_keeps_the_weight():
    sb = SelfBalance(init=7.0)
    assert sb.step_epoch() == 7.0
    sb.update(0.5, 0.0)
    assert sb.step_epoch() == 7.0  # mean loc 0: keep the previous weight


def test_non_finite_losses_are_skipped():
    sb = SelfBalance()
    sb.update(math.nan, 1.0)
    sb.update(1.0, torch.tensor(math.inf))
    sb.update(3.0, 1.0)
    assert sb.skipped == 2 and sb.count == 1
    assert sb.step_epoch() == pytest.approx(4.0)


def test_state_dict_round_trip():
    sb = SelfBalance()
    sb.update(2.0, 0.5)
    sb.step_epoch()
    restored = SelfBalance()
    restored.load_state_dict(sb.state_dict())
    assert restored.value == pytest.approx(5.0) and restored.weight.dtype == torch.float64


def test_all_reduce_is_called_with_the_epoch_sums():
    sb = SelfBalance()
    sb.update(1.0, 0.5)
    sb.update(3.0, 1.5)
    seen = []
    other_rank = torch.tensor([4.0, 0.0, 2.0], dtype=torch.float64)

    def all_reduce(stats):
        seen.append(stats.clone())
        return stats + other_rank

    # Both ranks: sum cls 8, sum loc 2 over 4 iterations -> (2 + 0.5) / 0.5.
    assert sb.step_epoch(all_reduce) == pytest.approx(5.0)
    assert len(seen) == 1 and seen[0].dtype == torch.float64
    assert seen[0].tolist() == [4.0, 2.0, 2.0]


def test_all_reduce_in_place_and_on_a_rank_without_iterations():
    sb = SelfBalance()
    seen = []

    def in_place(stats):  # like torch.distributed.all_reduce: returns None
        seen.append(stats.tolist())
        stats += torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)

    assert sb.step_epoch(in_place) == pytest.approx(4.0)
    assert seen == [[0.0, 0.0, 0.0]]  # a rank with no iteration still joins the collective


def test_all_reduce_returning_garbage_is_reported():
    sb = SelfBalance()
    with pytest.raises(ValueError, match="all_reduce"):
        sb.step_epoch(lambda stats: stats[:2])


def test_disabled_keeps_the_constant():
    sb = SelfBalance(init=10.0, enabled=False)
    sb.update(1.0, 0.1)
    calls = []
    assert sb.step_epoch(calls.append) == 10.0
    assert sb.value == 10.0 and sb.count == 0


def test_forward_scales_and_keeps_the_dtype():
    sb = SelfBalance(init=4.0)
    loc = torch.tensor(0.25, requires_grad=True)
    scaled = sb(loc)
    scaled.backward()
    assert scaled.dtype == torch.float32 and scaled.item() == 1.0
    assert loc.grad.item() == 4.0


def test_repr_shows_the_state():
    sb = SelfBalance(init=50.0)
    sb.update(1.0, 1.0)
    text = repr(sb)
    assert "weight=50.0000" in text and "enabled=True" in text and "iterations=1" in text


def test_bad_input_raises_a_clear_error():
    with pytest.raises(ValueError, match="init"):
        SelfBalance(init=0.0)
    with pytest.raises(ValueError, match="scalar"):
        SelfBalance().update(torch.ones(2), 1.0)
