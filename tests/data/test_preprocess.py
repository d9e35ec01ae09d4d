"""Evaluation preprocessing: timm's crop modes, pixel for pixel, and the models written before them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attrtag.data.preprocess import Preprocessing
from attrtag.errors import CheckpointError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A non-square picture with structure (a gradient and blocks), so crops are distinguishable."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w)[None, :]
    arr[..., 1] = np.linspace(0, 255, h)[:, None]
    arr[..., 2] = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return Image.fromarray(arr)


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize("size,crop_pct", [((48, 48), 0.875), ((40, 40), 1.0), ((32, 48), 0.9)])
def test_crop_modes_match_timm_eval_transform(mode: str, size: tuple[int, int], crop_pct: float) -> None:
    from timm.data import create_transform

    prep = Preprocessing(size, MEAN, STD, interpolation="bicubic", crop_pct=crop_pct, crop_mode=mode)
    timm_tf = create_transform(input_size=(3, *size), interpolation="bicubic", mean=MEAN, std=STD,
                               crop_pct=crop_pct, crop_mode=mode)
    # Landscape, portrait, and odd sizes whose centring offsets round differently from floor.
    for img in (photo(90, 60), photo(50, 70, seed=1), photo(641, 479, seed=2), photo(33, 97, seed=3)):
        ours = prep(img)
        theirs = timm_tf(img).numpy()
        assert ours.shape == theirs.shape == (3, *size)
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=f"{mode} {size} {crop_pct} {img.size}")


@pytest.mark.parametrize(
    "mean,std", [(MEAN, STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.1, 0.9, 0.33), (0.7, 0.05, 1.3))]
)
def test_normalize_is_torchvision_to_tensor_and_normalize_bit_for_bit(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> None:
    import torchvision.transforms.functional as F

    prep = Preprocessing((16, 256), mean, std)
    # Every uint8 value in every channel, in an odd-shaped image, and a non-contiguous view of it.
    arr = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3, axis=-1)
    arr[..., 1], arr[..., 2] = arr[..., 1].T, 255 - arr[..., 2]
    for rgb in (arr, np.tile(arr, (1, 3, 1))[:, ::3]):
        ours = prep.normalize(rgb)
        theirs = F.normalize(F.to_tensor(Image.fromarray(np.ascontiguousarray(rgb))), mean, std).numpy()
        assert ours.dtype == np.float32 and ours.flags.c_contiguous
        np.testing.assert_array_equal(ours, theirs)
    # Values already widened (e.g. a float array from elsewhere) take the same arithmetic.
    np.testing.assert_array_equal(prep.normalize(arr.astype(np.float32)), prep.normalize(arr))


def test_border_mode_pads_with_the_mean_colour_and_keeps_the_whole_image() -> None:
    prep = Preprocessing((40, 40), MEAN, STD, crop_pct=1.0, crop_mode="border")
    px = prep.pixels(Image.new("RGB", (80, 40), (255, 0, 0)))  # wide: padded above and below
    fill = [round(255 * m) for m in MEAN]
    assert px[0, 20].tolist() == fill and px[39, 20].tolist() == fill  # top and bottom rows: padding
    assert px[20, 0].tolist() == [255, 0, 0] and px[20, 39].tolist() == [255, 0, 0]  # the full width kept


def test_models_written_with_resize_mode_still_load() -> None:
    old_center = {"input_size": [32, 32], "mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",
                  "crop_pct": 0.875, "resize_mode": "center_crop"}
    assert Preprocessing.from_dict(old_center) == Preprocessing((32, 32), MEAN, STD, crop_pct=0.875, crop_mode="center")
    # The old "squash" resized straight to the input size and ignored crop_pct: timm's squash at 1.0.
    old_squash = Preprocessing.from_dict({**old_center, "resize_mode": "squash"})
    assert old_squash.crop_mode == "squash" and old_squash.crop_pct == 1.0
    img = photo(90, 60)
    straight = np.asarray(img.resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(old_squash.pixels(img), straight)
    with pytest.raises(CheckpointError, match="resize_mode 'stretch'"):
        Preprocessing.from_dict({**old_center, "resize_mode": "stretch"})
    with pytest.raises(CheckpointError, match="crop_mode 'middle'"):
        Preprocessing((32, 32), MEAN, STD, crop_mode="middle")


def test_from_data_config_reads_timm_and_overrides() -> None:
    import timm

    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet18", num_classes=0))
    p = Preprocessing.from_data_config(cfg)
    assert p.input_size == tuple(cfg["input_size"][1:]) and p.crop_pct == pytest.approx(cfg["crop_pct"])
    assert p.crop_mode == cfg["crop_mode"] and p.interpolation == cfg["interpolation"]
    q = Preprocessing.from_data_config(cfg, image_size=64, crop_mode="border")
    assert q.input_size == (64, 64) and q.crop_mode == "border" and q.mean == p.mean
    assert torch.is_tensor(torch.zeros(1))  # timm imported torch here; the module itself does not
