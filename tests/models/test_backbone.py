"""ResNet/ResNeXt backbone: shapes, torchvision names, freezing, weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alrp_lab.models.backbone import FrozenBatchNorm2d, ResNet, resnext101_32x8d
from alrp_lab.models.weights import describe_resnet_state_dict, load_backbone_weights


@pytest.mark.parametrize(
    ("depth", "expansion"),
    [(18, 1), (34, 1), (50, 4), (101, 4)],
)
def test_output_shapes_per_depth(depth: int, expansion: int) -> None:
    base = 8
    model = ResNet(depth, base_width=base).eval()
    c3, c4, c5 = model(torch.randn(1, 3, 32, 64))
    assert model.out_channels == [2 * base * expansion, 4 * base * expansion, 8 * base * expansion]
    assert c3.shape == (1, model.out_channels[0], 4, 8)
    assert c4.shape == (1, model.out_channels[1], 2, 4)
    assert c5.shape == (1, model.out_channels[2], 1, 2)


def test_with_c2_adds_layer1_output_and_no_parameters() -> None:
    torch.manual_seed(0)
    plain = ResNet(50, base_width=8).eval()
    with_c2 = ResNet(50, base_width=8, with_c2=True).eval()
    assert with_c2.state_dict().keys() == plain.state_dict().keys()
    with_c2.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 64)
    c2, *rest = with_c2(x)
    assert with_c2.out_channels == [32, *plain.out_channels]
    assert c2.shape == (1, 32, 8, 16)  # stride 4
    for got, expected in zip(rest, plain(x), strict=True):
        torch.testing.assert_close(got, expected)


def test_torchvision_resnet50_names_and_shapes() -> None:
    # Names and shapes a torchvision resnet50 state dict has (spot checks, fc excluded).
    state = ResNet(50).state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert "layer1.0.downsample.1.running_var" in state
    assert state["layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
    assert "layer3.6.conv1.weight" not in state
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert not any(k.startswith("fc.") for k in state)
    # torchvision resnet50: 320 entries with fc (2) and the BN counters.
    assert len(state) == 318


def test_resnext_grouped_widths() -> None:
    model = resnext101_32x8d(base_width=16)
    conv2 = model.layer1[0].conv2
    # width = int(planes * 8 / 64) * 32 with planes = 16.
    assert conv2.groups == 32 and conv2.out_channels == 64
    assert model.out_channels == [128, 256, 512]
    assert model.arch == "ResNeXt-101 32x8d (base width 16)"


def test_basic_block_rejects_groups() -> None:
    with pytest.raises(ValueError, match="depth 50 or 101"):
        ResNet(18, groups=32, width_per_group=4)


@pytest.mark.parametrize("bad", [{"depth": 20}, {"norm": "ln"}, {"frozen_stages": 5}])
def test_bad_arguments_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        ResNet(**{"depth": 18, "base_width": 8, **bad})


def test_frozen_batchnorm_matches_batchnorm_in_eval() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5).double()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    frozen = FrozenBatchNorm2d(5).double()
    frozen.load_state_dict(bn.state_dict())  # drops num_batches_tracked silently
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn.eval()(x))


def test_frozen_stages_stop_gradients_and_keep_bn_in_eval() -> None:
    model = ResNet(18, base_width=8, frozen_stages=1).train()
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training


def test_group_norm_on_narrow_layers() -> None:
    model = ResNet(18, base_width=8, norm="gn")
    assert isinstance(model.bn1, nn.GroupNorm) and model.bn1.num_groups == 8
    assert model(torch.randn(1, 3, 32, 32))[-1].shape == (1, 64, 1, 1)


def _with_random_stats(model: ResNet) -> ResNet:
    # Non-trivial BN statistics, so a load that silently skipped them would show.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_file_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    source = _with_random_stats(ResNet(18, base_width=8))
    state = dict(source.state_dict())
    state["fc.weight"] = torch.zeros(10, 64)  # an ImageNet classifier's head is skipped
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / "r18.pth"
    torch.save(state, path)

    target = ResNet(18, base_width=8, norm="frozen_bn").eval()
    assert sorted(load_backbone_weights(target, path)) == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(source(x), target(x), strict=True):
        # Frozen BN folds its statistics into one scale and shift: float32 rounding differs.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_detector_checkpoint_keeps_backbone_keys_only(tmp_path) -> None:
    torch.manual_seed(2)
    source = _with_random_stats(ResNet(18, base_width=8))
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    state["module.fpn.lateral_convs.0.weight"] = torch.zeros(4, 16, 1, 1)
    path = tmp_path / "detector.pth"
    torch.save({"model": state, "epoch": 3}, path)

    target = ResNet(18, base_width=8).eval()
    assert load_backbone_weights(target, path) == []
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(source(x)[-1], target(x)[-1])


def test_wrong_architecture_names_the_file_architecture(tmp_path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(ResNet(34, base_width=8).state_dict(), path)
    with pytest.raises(ValueError) as e:
        load_backbone_weights(ResNet(18, base_width=8), path)
    message = str(e.value)
    assert "fit the model (ResNet-18 (base width 8))" in message
    assert "looks like ResNet-34 (base width 8)" in message
    assert "not in the model: layer1.2.conv1.weight" in message
    assert "backbone.weights" in message


def test_wrong_width_reports_shape_mismatch(tmp_path) -> None:
    path = tmp_path / "r18w.pth"
    torch.save(ResNet(18, base_width=16).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches.*conv1\.weight"):
        load_backbone_weights(ResNet(18, base_width=8), path)


def test_missing_file_names_config_key(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        load_backbone_weights(ResNet(18, base_width=8), tmp_path / "nope.pth")


def test_unreadable_file_is_a_value_error(tmp_path) -> None:
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        load_backbone_weights(ResNet(18, base_width=8), path)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (
            lambda: ResNet(50, base_width=8),
            "ResNet-50 (base width 8) (bottleneck blocks [3, 4, 6, 3])",
        ),
        (
            lambda: resnext101_32x8d(base_width=16),
            "ResNeXt-101 32x8d (base width 16) (bottleneck blocks [3, 4, 23, 3])",
        ),
        (lambda: ResNet(34, base_width=8), "ResNet-34 (base width 8) (basic blocks [3, 4, 6, 3])"),
    ],
)
def test_describe_state_dict(model, name: str) -> None:
    assert describe_resnet_state_dict(model().state_dict()) == name


@pytest.mark.parametrize("content", [b"\x00\x01random bytes", "pickled object"])
def test_an_unsafe_or_random_weights_file_is_refused_without_torchs_advice(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "pickled object":
        torch.save({"fc": nn.Linear(2, 2)}, path)  # a whole module: needs full unpickling
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="could not read backbone weights") as info:
        load_backbone_weights(ResNet(depth=18, base_width=8), path)
    assert "weights_only" not in str(info.value) and "torchvision-format" in str(info.value)
