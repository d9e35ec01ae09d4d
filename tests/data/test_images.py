"""Decoding image files to RGB: the generated bad-file corpus, conversions and error codes."""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from attrtag.data import images
from attrtag.errors import AttrtagError, ImageDecodeError
from attrtag.data.images import REASONS, display_path, is_image_path, load_rgb, to_rgb
from tests.badfiles import BLUE, RED, WHITE, CorpusEntry, make_corpus, _bomb_png


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CorpusEntry]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _reason(path: object, **kw: object) -> str:
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path, **kw)  # type: ignore[arg-type]
    return info.value.reason  # type: ignore[attr-defined]


def _write(tmp_path: Path, name: str, image: Image.Image, **params: object) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_entries_decode_or_fail_as_expected(corpus: dict[str, CorpusEntry]) -> None:
    failures = []
    for name, entry in corpus.items():
        try:
            image = load_rgb(entry.path)
        except ImageDecodeError as err:
            reason = err.reason  # type: ignore[attr-defined]
            assert reason in REASONS, name
            assert display_path(entry.path) in str(err), f"{name}: message does not name the file"
            if reason != entry.expected:
                failures.append(f"{name} ({entry.note}): failed with {reason!r}: {err}")
            continue
        if entry.expected != "ok":
            failures.append(f"{name} ({entry.note}): decoded, expected {entry.expected!r}")
        else:
            failures += [f"{name} ({entry.note}): {p}" for p in entry.mismatches(image)]
    assert not failures, "\n".join(failures)


def test_corpus_covers_the_failure_codes(corpus: dict[str, CorpusEntry]) -> None:
    # A corpus that silently lost its bad files would make the test above pass vacuously.
    expected = {entry.expected for entry in corpus.values()}
    assert {"ok", "empty", "truncated", "decode", "not_image", "bomb"} <= expected
    assert expected <= set(REASONS) | {"ok"}
    assert len({entry.path for entry in corpus.values()}) == len(corpus)
    for entry in corpus.values():
        assert os.path.lexists(entry.path) and is_image_path(entry.path)


def test_corpus_leaves_pillow_globals_alone(corpus: dict[str, CorpusEntry]) -> None:
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    for entry in corpus.values():
        try:
            load_rgb(entry.path)
        except ImageDecodeError:
            pass
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS) == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- conversions ------------------------------------------------------------------------------


def test_exif_orientation_6_rotates_clockwise(corpus: dict[str, CorpusEntry]) -> None:
    path = corpus["exif_rotated_jpeg"].path
    with Image.open(path) as raw:
        assert raw.size == (64, 48) and raw.getexif()[0x0112] == 6  # the file really is rotated
    image = load_rgb(path)
    assert image.size == (48, 64)
    top, bottom = image.getpixel((24, 4)), image.getpixel((24, 60))
    assert top[0] > 200 and top[2] < 50, f"top should be red (was the left edge), got {top}"
    assert bottom[2] > 200 and bottom[0] < 50, f"bottom should be blue, got {bottom}"


def test_16_bit_is_scaled_not_clipped(corpus: dict[str, CorpusEntry]) -> None:
    path = corpus["gray16_png"].path
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
        assert raw.convert("RGB").getpixel((30, 15)) == WHITE  # Pillow's clipping, the bug avoided
    image = load_rgb(path)
    assert [image.getpixel((x, 15)) for x in (10, 30, 50)] == [(0, 0, 0), (128,) * 3, WHITE]


@pytest.mark.parametrize(("mode", "dtype"), [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_16_bit_modes_map_full_range(mode: str, dtype: str) -> None:
    # frombytes, not convert(): Pillow's I;16 -> I;16B conversion itself clips at 255.
    values = np.array([[0, 257, 32768, 65535]], dtype)
    image = Image.frombytes(mode, (4, 1), values.tobytes())
    assert [image.getpixel((x, 0)) for x in range(4)] == [0, 257, 32768, 65535]
    rgb = np.asarray(to_rgb(image))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb == rgb[..., :1]).all()


def test_16_bit_pgm_decodes_through_mode_i(tmp_path: Path) -> None:
    # Pillow opens 16-bit PGM as mode "I" (rescaled to 0..65535): it must not clip to white.
    path = tmp_path / "deep.pgm"
    path.write_bytes(b"P5\n2 1\n65535\n\x80\x00\xff\xff")
    assert load_rgb(path).getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # normalised floats
        ([0.0, 100.0, 255.0], [0, 100, 255]),  # 8-bit range in float
        ([0.0, 32768.0, 65535.0], [0, 128, 255]),  # 16-bit range in float
        ([float("nan"), 0.25, 1.0], [0, 64, 255]),  # NaN becomes black, not an error
    ],
)
def test_float_images_scale_by_their_range(values: list[float], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], np.float32), mode="F")
    assert np.asarray(to_rgb(image))[0, :, 1].tolist() == expected


def test_float_tiff_file_decodes(tmp_path: Path) -> None:
    path = _write(tmp_path, "f.tif", Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F"))
    assert load_rgb(path).getpixel((1, 1)) == (128, 128, 128)


def test_transparency_composites_over_white(corpus: dict[str, CorpusEntry]) -> None:
    image = load_rgb(corpus["rgba_png"].path)
    assert image.getpixel((56, 24)) == WHITE  # transparent black is white, not black
    assert image.getpixel((40, 24)) == (255, 127, 127)  # half-transparent red is pink
    assert load_rgb(corpus["palette_png_transparent"].path).getpixel((10, 15)) == WHITE


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("LA", (2, 2), (50, 0)), WHITE),
        (Image.new("LA", (2, 2), (50, 255)), (50, 50, 50)),
        (Image.new("RGBa", (2, 2), (0, 0, 0, 0)), WHITE),
        (Image.new("PA", (2, 2), (0, 0)), WHITE),
    ],
    ids=["LA-clear", "LA-opaque", "RGBa", "PA"],
)
def test_alpha_modes(image: Image.Image, expected: tuple[int, int, int]) -> None:
    assert to_rgb(image).getpixel((1, 1)) == expected


def test_colour_key_transparency_is_white(tmp_path: Path) -> None:
    # PNG tRNS on an RGB image: one colour means "transparent" without an alpha band.
    key = (10, 20, 30)
    image = Image.new("RGB", (4, 2), key)
    image.paste(RED, (2, 0, 4, 2))
    path = _write(tmp_path, "key.png", image, transparency=key)
    out = load_rgb(path)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((3, 0)) == RED


def test_grayscale_gives_three_equal_channels(tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = np.asarray(load_rgb(_write(tmp_path, "g.png", Image.fromarray(grey, "L"))))
    assert rgb.shape == (20, 30, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)


def test_bilevel_and_plain_palette(tmp_path: Path) -> None:
    bilevel = Image.new("1", (4, 4), 0)
    bilevel.paste(1, (2, 0, 4, 4))
    out = load_rgb(_write(tmp_path, "b.pbm", bilevel))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((3, 0)) == WHITE
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255])
    assert load_rgb(_write(tmp_path, "p.gif", palette)).getpixel((1, 1)) == BLUE


def test_cmyk_colour_is_roughly_right(corpus: dict[str, CorpusEntry]) -> None:
    with Image.open(corpus["cmyk_jpeg"].path) as raw:
        assert raw.mode == "CMYK"
    image = load_rgb(corpus["cmyk_jpeg"].path)
    cyan, grey = (np.array(image.getpixel(xy)) for xy in [(16, 24), (48, 24)])
    assert np.abs(cyan - (0, 255, 255)).max() <= 12
    assert np.abs(grey - (127, 127, 127)).max() <= 12


@pytest.mark.parametrize(
    ("mode", "value"),
    [("YCbCr", (76, 85, 255)), ("HSV", (0, 255, 255)), ("LAB", (138, 209, 198))],
)
def test_other_colour_spaces_give_red(mode: str, value: tuple[int, int, int]) -> None:
    # (Pillow's LAB stores a and b offset by 128; red is L=54, a=+81, b=+70.)
    r, g, b = to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0))
    assert r > 240 and g < 15 and b < 15, (mode, (r, g, b))


def test_lab_tiff_file_decodes(tmp_path: Path) -> None:
    path = _write(tmp_path, "lab.tif", Image.new("LAB", (4, 4), (138, 209, 198)))
    r, g, b = load_rgb(path).getpixel((1, 1))
    assert r > 240 and g < 15 and b < 15


def test_first_frame_of_mpo(tmp_path: Path) -> None:
    # Phone cameras write MPO (several JPEGs in one .jpg); Pillow opens it via the JPEG plugin.
    path = _write(tmp_path, "phone.jpg", Image.new("RGB", (8, 8), RED), format="MPO",
                  save_all=True, append_images=[Image.new("RGB", (8, 8), BLUE)])
    r, g, b = load_rgb(path).getpixel((4, 4))
    assert r > 240 and b < 15


def test_result_is_independent_rgb_copy(corpus: dict[str, CorpusEntry]) -> None:
    source = Image.new("RGB", (3, 3), RED)
    out = to_rgb(source)
    out.putpixel((0, 0), BLUE)
    assert source.getpixel((0, 0)) == RED
    image = load_rgb(corpus["good_png"].path)  # the file is closed: pixels must still be there
    assert image.mode == "RGB" and image.getpixel((16, 12)) == RED


def test_unsupported_mode_is_value_error() -> None:
    with pytest.raises(ValueError):
        to_rgb(Image.new("La", (2, 2)))


# --- errors -----------------------------------------------------------------------------------


def test_bomb_refused_quickly(corpus: dict[str, CorpusEntry]) -> None:
    start = time.perf_counter()
    assert _reason(corpus["bomb_png"].path) == "bomb"
    assert time.perf_counter() - start < 1.0


def test_max_pixels_checked_before_decoding(tmp_path: Path) -> None:
    # 5000x5000 (under Pillow's own limit) with its pixel data cut off: decoding would report
    # "truncated", so "bomb" proves the size was refused from the header alone.
    bomb = _bomb_png(5000, 5000)
    path = tmp_path / "big.png"
    path.write_bytes(bomb[:200])
    assert _reason(path, max_pixels=1_000_000) == "bomb"
    assert _reason(path, max_pixels=25_000_000) == "truncated"
    with pytest.raises(ImageDecodeError, match="25000000 pixels exceeds the limit of 1000000"):
        load_rgb(path, max_pixels=1_000_000)


def test_a_limit_above_pillows_own_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 20000x20000 is over twice Pillow's default limit, where Image.open refuses by itself:
    # "truncated" proves the header got past Pillow, and our own check still refuses at 1e6.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back after the test
    path = tmp_path / "panorama.png"
    path.write_bytes(_bomb_png(20000, 20000)[:200])
    assert _reason(path) == "bomb"
    assert _reason(path, max_pixels=10**9) == "truncated"
    assert Image.MAX_IMAGE_PIXELS == 10**9
    assert _reason(path, max_pixels=1_000_000) == "bomb"  # raised stays raised; ours still applies
    with pytest.raises(ImageDecodeError, match="raise the limit: --max-pixels"):
        load_rgb(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.jpg") == "missing"
    assert _reason(tmp_path / "nope" / "deeper.jpg") == "missing"
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "not_file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert _reason(fifo) == "not_file"  # open() on a FIFO would hang until a writer appears


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "locked.png", Image.new("RGB", (2, 2)))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root ignores mode bits: simulate the refusal instead
        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(images, "open", refuse, raising=False)
    with pytest.raises(ImageDecodeError, match="permission denied") as info:
        load_rgb(path)
    assert info.value.reason == "permission"  # type: ignore[attr-defined]


def test_os_read_error_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "disk.png", Image.new("RGB", (2, 2)))

    class FailingDisk(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(images, "open", lambda *a, **k: FailingDisk(b"x"), raising=False)
    assert _reason(path) == "unreadable"


def test_errors_are_attrtag_errors_with_path(tmp_path: Path) -> None:
    with pytest.raises(AttrtagError, match=r"nope\.jpg: no such file"):
        load_rgb(tmp_path / "nope.jpg")


def test_truncation_detection_needs_pillow_flag_off(
    corpus: dict[str, CorpusEntry], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Why the flag matters: with it on (set by some other library), Pillow pads the missing
    # half with grey and no error is raised. We warn rather than silently flip it back.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(images, "_warned_truncated_setting", False)
    with caplog.at_level(logging.WARNING, logger="attrtag.images"):
        image = load_rgb(corpus["truncated_jpeg"].path)
    assert image.size == (96, 64)
    assert "LOAD_TRUNCATED_IMAGES is True" in caplog.text
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# --- paths ------------------------------------------------------------------------------------


def test_non_utf8_name_opens_as_bytes_and_str(corpus: dict[str, CorpusEntry]) -> None:
    if "non_utf8_name" not in corpus:
        pytest.skip("this filesystem refuses non-UTF-8 file names")
    path = corpus["non_utf8_name"].path
    for form in (path, str(path), os.fsencode(path)):
        assert load_rgb(form).getpixel((16, 12)) == RED


def test_display_path_of_non_utf8_name_is_printable_json() -> None:
    shown = display_path(os.fsdecode(b"/data/bad\xff name.png"))
    assert shown == "/data/bad\\xff name.png"
    assert display_path(b"/data/bad\xff name.png") == shown
    assert shown.isprintable()
    assert json.loads(json.dumps({"path": shown}, ensure_ascii=False).encode("utf-8")) == {"path": shown}


def test_display_path_escapes_controls_and_keeps_unicode() -> None:
    assert display_path("a\nb\tc\x1b.jpg") == "a\\nb\\tc\\x1b.jpg"
    assert display_path(Path("café/日本.png")) == "café/日本.png"
    assert display_path("lone\ud800surrogate").isprintable()


def test_error_for_non_utf8_missing_file_is_utf8_safe(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(os.fsencode(tmp_path) + b"/gone\xfe.jpg")
    message = str(info.value)
    assert "gone\\xfe.jpg" in message
    message.encode("utf-8")  # would raise on a surrogate escape


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True), ("A.JPEG", True), ("x.png", True), ("x.tif", True), ("x.TIFF", True),
        ("x.webp", True), ("x.bmp", True), ("x.gif", True), ("x.pgm", True), ("x.pbm", True),
        ("x.ppm", True), (b"bad\xff.jpg", True), (Path("dir.d/x.jpg"), True),
        ("x.txt", False), ("jpg", False), (".jpg", False), ("x.jpg.part", False), ("dir.png/x", False),
    ],
)
def test_is_image_path(name: object, expected: bool) -> None:
    assert is_image_path(name) is expected  # type: ignore[arg-type]


def test_module_does_not_import_torch() -> None:
    code = "import sys, attrtag.data.images; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(images.__file__).parents[2])}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
