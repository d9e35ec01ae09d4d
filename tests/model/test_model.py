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
    with pytest.raises(AttrtagError, match="image_size 100x100 does not work with backbone 'vit_tiny_patch16_224'"):
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


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An empty Hugging Face cache and a Hub address where nothing listens."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_pretrained_without_network_fails_at_once_in_one_line(no_network, tiny_data, tmp_path, monkeypatch, capsys):
    import timm.models._hub
    from attrtag.cli import main

    def retrying_download(*args, **kwargs):  # where huggingface_hub would retry for ~50 s
        raise AssertionError("timm asked the unreachable Hub for weights")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", retrying_download)
    with pytest.raises(AttrtagError, match=r"'test_resnet' are not in the local cache and http://127.0.0.1:9"):
        build_model(SCHEMA, "test_resnet", pretrained=True)
    code = main(["train", "--schema", str(tiny_data[0]), "--manifest", str(tiny_data[1]), "--out", str(tmp_path / "r"),
                 "--backbone", "test_resnet", "--pretrained", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--pretrained PATH" in err


def test_cached_hub_weights_load_without_network(no_network):
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=0)
    for p in src.parameters():
        torch.nn.init.normal_(p)  # weights no fresh model has
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = no_network / f"models--{timm.models.get_pretrained_cfg('test_resnet').hf_hub_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(src.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    m = build_model(SCHEMA, "test_resnet", pretrained=True)
    for k, v in src.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    assert constants.HF_HUB_OFFLINE is False  # offline only for that one load
