import pytest
import torch

from attrtag.errors import AttrtagError
from attrtag.model import GroupedHead, ProbabilityModel, build_model, check_input_size, resolve_preprocessing
from attrtag.schema import Schema

SCHEMA = Schema.from_dict({"a": ["x", "y", "z"], "b": [f"v{i}" for i in range(7)], "c": ["p", "q"]})


def test_grouped_head_splits_one_linear_layer():
    head = GroupedHead(16, {"a": 3, "b": 7, "c": 2})
    assert head.fc.out_features == 12
    out = head(torch.randn(5, 16))
    assert list(out) == ["a", "b", "c"] and [v.shape for v in out.values()] == [(5, 3), (5, 7), (5, 2)]
    full = head.fc(torch.zeros(1, 16) + 1)
    assert torch.allclose(torch.cat(list(head(torch.zeros(1, 16) + 1).values()), 1), full)


def test_model_outputs_and_probabilities():
    torch.manual_seed(0)
    m = build_model(SCHEMA, "test_resnet").eval()
    x = torch.randn(4, 3, 32, 32)
    logits = m(x)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"a": (4, 3), "b": (4, 7), "c": (4, 2)}
    probs = ProbabilityModel(m)(x)
    assert len(probs) == 3 and all(torch.allclose(p.sum(1), torch.ones(4)) for p in probs)
    assert torch.allclose(m.forward_head(m.forward_features(x))["b"], logits["b"])


def test_forward_features_are_feature_maps_as_in_timm():
    torch.manual_seed(0)
    m = build_model(SCHEMA, "test_resnet").eval()
    x = torch.randn(2, 3, 64, 64)
    maps = m.forward_features(x)
    assert maps.ndim == 4 and maps.shape[:2] == (2, m.backbone.num_features)  # (B, C, H', W'): not pooled
    assert torch.allclose(maps, m.backbone.forward_features(x))
    pooled = m.forward_head(maps, pre_logits=True)
    assert pooled.shape == (2, m.backbone.num_features)
    assert torch.allclose(pooled, m.backbone(x), atol=1e-6)  # num_classes=0: the backbone's pooled output


def test_preprocessing_comes_from_timm_config_with_overrides():
    import timm

    m = build_model(SCHEMA, "resnet18")
    cfg = timm.data.resolve_data_config({}, model=m.backbone)
    p = resolve_preprocessing(m.backbone)
    assert p.input_size == tuple(cfg["input_size"][1:]) and p.mean == pytest.approx(cfg["mean"])
    assert p.interpolation == cfg["interpolation"] and p.crop_pct == pytest.approx(cfg["crop_pct"])
    assert p.crop_mode == cfg["crop_mode"] == "center"
    p2 = resolve_preprocessing(m.backbone, image_size=96, crop_mode="squash")
    assert p2.input_size == (96, 96) and p2.crop_mode == "squash" and p2.std == p.std
    assert m.card.preprocessing == p and m.card.backbone == "resnet18" and m.card.schema == SCHEMA
    assert build_model(SCHEMA, "resnet18", image_size=96, crop_mode="squash").card.preprocessing == p2


def test_unknown_backbone_and_bad_image_size_are_clear_errors():
    with pytest.raises(AttrtagError, match="unknown timm backbone 'resnet_nope'"):
        build_model(SCHEMA, "resnet_nope")
    m = build_model(SCHEMA, "vit_tiny_patch16_224", image_size=100)  # fixed-size position embeddings
    with pytest.raises(AttrtagError, match="--image-size 100x100 does not work with backbone 'vit_tiny_patch16_224'"):
        check_input_size(m)


def test_pretrained_from_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    m = build_model(SCHEMA, "test_resnet", pretrained=path)
    for k, v in src.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    with pytest.raises(AttrtagError, match="weights file not found"):
        build_model(SCHEMA, "test_resnet", pretrained=tmp_path / "none.pth")
