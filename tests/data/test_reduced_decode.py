"""Reduced JPEG decoding: the smallest DCT scale that covers the target, oriented, with every check kept."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrtag.data.images import load_rgb
from attrtag.data.loader import train_decode_size
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import ImageDecodeError
from tests.badfiles import BLUE, RED, make_corpus

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth structure (gradients and large blocks) like a photo, so a reduced decode can be compared."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 64 + 1, w // 64 + 1)).repeat(64, 0).repeat(64, 1)[:h, :w]
    arr = np.stack([x * 255 // w, y * 255 // h, blocks], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def save_jpeg(path: Path, image: Image.Image, **params: object) -> Path:
    image.save(path, "JPEG", quality=92, **params)
    return path


def test_jpeg_decodes_at_the_smallest_scale_that_covers_min_size(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "big.jpg", photo(1600, 1200))
    assert load_rgb(path).size == (1600, 1200)
    assert load_rgb(path, min_size=(200, 150)).size == (200, 150)  # 1/8 covers it exactly
    assert load_rgb(path, min_size=(201, 150)).size == (400, 300)  # one pixel more: 1/4
    assert load_rgb(path, min_size=(150, 299)).size == (400, 300)  # each dimension counts
    assert load_rgb(path, min_size=(1000, 10)).size == (1600, 1200)  # no scale covers it: full
    assert load_rgb(path, min_size=(5000, 5000)).size == (1600, 1200)  # larger than the image


def test_exif_rotated_photo_covers_the_target_in_its_displayed_orientation(tmp_path: Path) -> None:
    # Stored 1600x800, red left half and blue right half, orientation 6 (rotate clockwise to
    # view): displayed 800x1600 with red on top. The scale is chosen on the stored size, so the
    # target must be swapped first; unswapped, (100, 200) would pick 1/4 and give 200x400.
    stored = Image.new("RGB", (1600, 800), RED)
    stored.paste(BLUE, (800, 0, 1600, 800))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save_jpeg(tmp_path / "rot.jpg", stored, exif=exif)
    image = load_rgb(path, min_size=(100, 200))
    assert image.size == (100, 200)
    top, bottom = np.asarray(image.getpixel((50, 20))), np.asarray(image.getpixel((50, 180)))
    assert np.abs(top - RED).max() <= 12 and np.abs(bottom - BLUE).max() <= 12


def test_reduced_decode_keeps_colour_modes(tmp_path: Path) -> None:
    grey = save_jpeg(tmp_path / "grey.jpg", Image.new("L", (800, 800), 77))
    out = load_rgb(grey, min_size=(100, 100))
    assert out.mode == "RGB" and out.size == (100, 100)
    assert np.abs(np.asarray(out).astype(int) - 77).max() <= 2
    cmyk = Image.new("CMYK", (800, 800), (255, 0, 0, 0))  # cyan
    out = load_rgb(save_jpeg(tmp_path / "cmyk.jpg", cmyk), min_size=(100, 100))
    assert out.mode == "RGB" and out.size == (100, 100)
    assert np.abs(np.asarray(out.getpixel((50, 50))) - (0, 255, 255)).max() <= 12


def test_max_pixels_is_checked_on_the_full_size_before_scaling(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "big.jpg", photo(1600, 1200))
    with pytest.raises(ImageDecodeError, match="1600x1200 = 1920000 pixels exceeds the limit of 1000000") as info:
        load_rgb(path, max_pixels=1_000_000, min_size=(100, 100))  # 1/8 would be 30,000 pixels
    assert info.value.reason == "bomb"  # type: ignore[attr-defined]


def test_truncated_large_jpeg_is_still_truncated(tmp_path: Path) -> None:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path, min_size=(100, 75))
    assert info.value.reason == "truncated"  # type: ignore[attr-defined]


def test_every_bad_file_fails_the_same_way_when_scaled(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    for name, entry in corpus.items():
        try:
            image = load_rgb(entry.path, min_size=(8, 6))
        except ImageDecodeError as err:
            assert err.reason == entry.expected, f"{name}: {err}"  # type: ignore[attr-defined]
        else:
            assert entry.expected == "ok" and image.mode == "RGB", name


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_preprocessing_load_matches_full_decoding(tmp_path: Path, mode: str) -> None:
    prep = Preprocessing((56, 48), MEAN, STD, crop_pct=0.875, crop_mode=mode)
    assert prep.decode_size() == (54, 64)  # timm's scale_size (floor(48/0.875), floor(56/0.875)), as (w, h)
    path = save_jpeg(tmp_path / "p.jpg", photo(1280, 960, seed=3))
    reduced = prep.load(path)
    with Image.open(path) as raw:
        raw.load()  # proves the file itself is full size
        assert raw.size == (1280, 960)
    full = prep.pixels(load_rgb(path))
    assert reduced.shape == full.shape == (56, 48, 3)
    diff = np.abs(reduced.astype(int) - full.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12, (diff.mean(), diff.max())


def test_preprocessing_decode_size_scales_with_the_input() -> None:
    assert Preprocessing((224, 224), MEAN, STD, crop_pct=0.875).decode_size() == (256, 256)
    assert Preprocessing((224, 224), MEAN, STD, crop_pct=1.0).decode_size(2.0) == (448, 448)


def test_training_decodes_enough_for_its_smallest_random_crop() -> None:
    prep = Preprocessing((224, 160), MEAN, STD)
    w, h = train_decode_size(prep)
    # The smallest crop (half the area at aspect 3/4) must still hold the input size.
    assert w * np.sqrt(0.5 * 0.75) >= 160 and h * np.sqrt(0.5 * 0.75) >= 224
    assert (w, h) == (262, 366)
