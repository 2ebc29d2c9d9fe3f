"""Backbones by name, stems, widths, the architecture they record, and the exported state dict."""

import pytest
import torch
import torchvision
from torch import nn

from barlowtwins.errors import ConfigError
from barlowtwins.models.backbones import MAX_WIDTH, create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.save import backbone_state


@pytest.mark.parametrize("name,features", [("resnet18", 512), ("resnet50", 2048), ("mobilenet_v3_small", 1024),
                                           ("efficientnet_b0", 1280), ("convnext_tiny", 768)])
def test_feature_size_is_discovered(name, features):
    net = create_backbone(name)
    assert net.num_features == features
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, features)


def test_zero_init_residual_on_resnets():
    net = create_backbone("resnet18")
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (net.layer1, net.layer4) for b in layer)
    net = create_backbone("resnet50", zero_init_residual=False)
    assert torch.count_nonzero(net.layer1[0].bn3.weight) > 0
    # Not a ResNet: silently not applicable.
    create_backbone("mobilenet_v3_small", zero_init_residual=True)


def test_small_stems():
    small = create_backbone("resnet18", stem="small")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    pool = create_backbone("resnet18", stem="small-pool")
    assert pool.conv1.kernel_size == (3, 3) and isinstance(pool.maxpool, nn.MaxPool2d)
    x = torch.randn(2, 3, 32, 32)
    small.eval(), pool.eval()
    with torch.no_grad():
        assert small(x).shape == pool(x).shape == (2, 512)
    with pytest.raises(ConfigError, match="only supported for ResNet"):
        create_backbone("mobilenet_v3_small", stem="small")
    with pytest.raises(ConfigError, match="unknown stem"):
        create_backbone("resnet18", stem="tiny")


def test_width_scales_a_resnet_and_keeps_torchvision_keys():
    narrow = create_backbone("resnet18", width=16)
    assert narrow.num_features == 128
    reference = torchvision.models.resnet18()
    assert set(narrow.state_dict()) == set(reference.state_dict()) - {"fc.weight", "fc.bias"}
    assert create_backbone("resnet50", width=16).num_features == 16 * 8 * 4
    with pytest.raises(ConfigError, match="only supported for ResNet"):
        create_backbone("mobilenet_v3_small", width=16)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'"):
        create_backbone("resnet19")


def test_exported_backbone_loads_into_torchvision_minus_the_head(tmp_path):
    for name in ("resnet18", "resnet50"):
        net = create_backbone(name)
        path = tmp_path / f"{name}.pth"
        save_atomic(backbone_state(net), path)
        state = torch.load(path, weights_only=True)
        target = getattr(torchvision.models, name)()
        result = target.load_state_dict(state, strict=False)
        assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
        assert result.unexpected_keys == []
        for k, v in state.items():
            assert torch.equal(target.state_dict()[k], v)


def test_unknown_backbone_suggests_the_closest_names():
    with pytest.raises(ConfigError, match=r"did you mean resnet50") as e:
        create_backbone("resnet05")
    assert "list-backbones" in str(e.value)


def test_list_backbones_filters_by_pattern():
    from barlowtwins.models.backbones import list_backbones

    tv = list_backbones("resnet*", include_timm=False)
    assert "resnet18" in tv and "wide_resnet50_2" not in tv and all(n.startswith("resnet") for n in tv)
    assert "wide_resnet50_2" in list_backbones("resnet", include_timm=False)  # no wildcard: contains


def test_timm_backbone_feature_size_is_discovered():
    timm = pytest.importorskip("timm")
    net = create_backbone("timm:test_resnet")
    reference = timm.create_model("test_resnet", num_classes=0)
    assert net.num_features == reference.num_features
    assert not any(k.startswith(("fc.", "head.")) for k in net.state_dict())  # no classifier keys
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.num_features)
    from barlowtwins.models.backbones import list_backbones

    assert "timm:test_resnet" in list_backbones("timm:test_res*")


@pytest.mark.parametrize("kw,message", [({"name": "timm:resnet10q"}, r"did you mean .*resnet10t"),
                                        ({"name": "timm:test_resnet", "width": 8}, "torchvision ResNets only"),
                                        ({"name": "timm:test_resnet", "stem": "small"}, "torchvision ResNets only")])
def test_timm_errors(kw, message):
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match=message):
        create_backbone(**kw)


@pytest.mark.parametrize("kw", [dict(name="resnet18", stem="small", width=8), dict(name="resnet34"),
                                dict(name="mobilenet_v3_small")])
def test_backbone_records_its_architecture(kw):
    net = create_backbone(**kw)
    assert net.arch == {"backbone": kw["name"], "stem": kw.get("stem", "standard"), "width": kw.get("width")}
    again = create_backbone(net.arch["backbone"], stem=net.arch["stem"], width=net.arch["width"])
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


@pytest.mark.parametrize("width,message", [(MAX_WIDTH + 1, f"at most {MAX_WIDTH}"), (20000, f"at most {MAX_WIDTH}"),
                                           ("abc", "an integer"), (True, "an integer"), (8.5, "an integer"),
                                           (0, "at least 1")])
def test_width_is_an_integer_within_the_declared_bound(width, message):
    with torch.device("meta"), pytest.raises(ConfigError, match=f"width .*{message}") as e:  # meta: never allocates
        create_backbone("resnet18", width=width)
    assert "\n" not in str(e.value)
    with torch.device("meta"):
        assert create_backbone("resnet18", width=MAX_WIDTH).conv1.out_channels == MAX_WIDTH
