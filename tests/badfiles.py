"""A generated corpus of good, awkward and broken image files for decoding and batch-tagging tests.

Nothing binary is committed: :func:`make_corpus` writes every file with Pillow and numpy into a
folder (a pytest ``tmp_path``) in well under a second. Every file it writes is an entry, and every
name has an image extension, so a folder scan with ``attrtag.images.is_image_path`` finds them all.

    corpus = make_corpus(tmp_path)
    for name, entry in corpus.items():
        if entry.expected == "ok":
            assert not entry.mismatches(load_rgb(entry.path))
        else:  # an ImageDecodeError reason code, see attrtag.images.REASONS
            ...

Entries that the platform cannot produce (symbolic links, non-UTF-8 names) are left out, and the
chmod-000 file is expected to decode when the tests run as root, who can read it anyway.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)

# Quadrant centres of the 64x48 test picture: (x, y) -> colour.
_QUADRANTS: dict[tuple[int, int], RGB] = {
    (16, 12): RED, (48, 12): GREEN, (16, 36): BLUE, (48, 36): YELLOW,
}


@dataclass(frozen=True)
class CorpusEntry:
    """One generated file and what decoding it must give.

    Attributes:
        path: the file (``str`` parts may carry ``os.fsdecode`` surrogate escapes).
        expected: ``"ok"``, or the ``ImageDecodeError.reason`` code decoding must fail with.
        size: for ``ok``: (width, height) of the decoded image, after EXIF orientation.
        pixels: for ``ok``: (x, y) -> expected RGB, probed away from colour edges.
        tolerance: allowed per-channel difference (JPEG is lossy; PNG entries use 0).
        note: what the entry exercises, for test ids and failure messages.
    """

    path: Path
    expected: str
    size: tuple[int, int] | None = None
    pixels: dict[tuple[int, int], RGB] = field(default_factory=dict)
    tolerance: int = 0
    note: str = ""

    def mismatches(self, image: Image.Image) -> list[str]:
        """How a decoded image differs from this entry's expectation.

        Args:
            image: the result of decoding ``path``.

        Returns:
            Human-readable differences; empty when the image is as expected.
        """
        problems = []
        if image.mode != "RGB":
            problems.append(f"mode {image.mode!r}, expected 'RGB'")
        if self.size is not None and image.size != self.size:
            problems.append(f"size {image.size}, expected {self.size}")
            return problems  # probes would land on the wrong pixels
        for xy, want in self.pixels.items():
            got = tuple(image.getpixel(xy))  # type: ignore[arg-type]
            if max(abs(int(g) - w) for g, w in zip(got, want)) > self.tolerance:
                problems.append(f"pixel {xy} is {got}, expected {want} ± {self.tolerance}")
        return problems


def make_corpus(directory: Path) -> dict[str, CorpusEntry]:
    """Write the corpus into ``directory`` (created if needed) and describe each file.

    Args:
        directory: an empty folder, e.g. pytest's ``tmp_path``.

    Returns:
        Entry name -> :class:`CorpusEntry`, in a stable order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, CorpusEntry] = {}

    def add(name: str, filename: str, data: bytes, expected: str, **kw: object) -> None:
        path = directory / filename
        path.write_bytes(data)
        out[name] = CorpusEntry(path=path, expected=expected, **kw)  # type: ignore[arg-type]

    quadrants = _quadrant_picture()
    add("good_jpeg", "good.jpg", _encode(quadrants, "JPEG", quality=95), "ok",
        size=(64, 48), pixels=_QUADRANTS, tolerance=12, note="baseline JPEG, four colour quadrants")
    good_png = _encode(quadrants, "PNG")
    add("good_png", "good.png", good_png, "ok", size=(64, 48), pixels=_QUADRANTS,
        note="baseline PNG, four colour quadrants")

    # Stored 64x48 red|blue with orientation 6 ("rotate 90° clockwise to view"): the left
    # (red) column becomes the top, so a counter-clockwise mistake puts blue on top.
    halves = _halves((64, 48), RED, BLUE)
    exif = Image.Exif()
    exif[0x0112] = 6
    add("exif_rotated_jpeg", "exif_rot6.jpg", _encode(halves, "JPEG", quality=95, exif=exif), "ok",
        size=(48, 64), pixels={(24, 16): RED, (24, 48): BLUE}, tolerance=12,
        note="EXIF orientation 6: red ends on top, blue at the bottom")

    add("grayscale_png", "gray.png", _encode(Image.new("L", (40, 30), 77), "PNG"), "ok",
        size=(40, 30), pixels={(20, 15): (77, 77, 77)}, note="mode L -> three equal channels")

    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :32] = (0, 160, 0, 255)  # opaque green
    rgba[:, 32:48] = (255, 0, 0, 128)  # half-transparent red: over white -> (255, 127, 127)
    # columns 48.. stay (0, 0, 0, 0): transparent black must come out white, not black
    add("rgba_png", "rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), "ok", size=(64, 48),
        pixels={(16, 24): (0, 160, 0), (40, 24): (255, 127, 127), (56, 24): WHITE}, tolerance=1,
        note="alpha composited over white")

    cmyk = Image.new("CMYK", (64, 48), (255, 0, 0, 0))  # cyan
    cmyk.paste((0, 0, 0, 128), (32, 0, 64, 48))  # 50% black
    add("cmyk_jpeg", "cmyk.jpg", _encode(cmyk, "JPEG", quality=95), "ok", size=(64, 48),
        pixels={(16, 24): (0, 255, 255), (48, 24): (127, 127, 127)}, tolerance=12,
        note="CMYK JPEG: cyan | mid grey")

    deep = np.zeros((30, 60), np.uint16)
    deep[:, 20:40] = 32768
    deep[:, 40:] = 65535
    add("gray16_png", "gray16.png", _encode(Image.fromarray(deep), "PNG"), "ok", size=(60, 30),
        pixels={(10, 15): (0, 0, 0), (30, 15): (128, 128, 128), (50, 15): WHITE},
        note="16-bit PNG (I;16): 0 / 32768 / 65535 scale to 0 / 128 / 255, not clipped to 255")

    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([0, 255, 0, 255, 0, 0])  # index 0 green (transparent), 1 red
    palette.paste(1, (20, 0, 40, 30))
    add("palette_png_transparent", "palette_trns.png", _encode(palette, "PNG", transparency=0),
        "ok", size=(40, 30), pixels={(10, 15): WHITE, (30, 15): RED},
        note="palette PNG with tRNS: transparent index -> white")

    add("animated_gif", "animated.gif", _frames("GIF", RED, BLUE), "ok", size=(20, 10),
        pixels={(10, 5): RED}, note="two frames red, blue: first frame wins")
    add("multipage_tiff", "multipage.tif", _frames("TIFF", GREEN, BLUE), "ok", size=(20, 10),
        pixels={(10, 5): GREEN}, note="two pages green, blue: first page wins")

    add("empty_file", "empty.jpg", b"", "empty", note="zero bytes")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    noisy_jpeg, noisy_png = _encode(noise, "JPEG", quality=90), _encode(noise, "PNG")
    add("truncated_jpeg", "truncated.jpg", noisy_jpeg[: len(noisy_jpeg) // 2], "truncated",
        note="first half of a JPEG (headers intact, scan cut off)")
    add("truncated_png", "truncated.png", noisy_png[: len(noisy_png) // 2], "truncated",
        note="first half of a PNG (IDAT cut off)")
    add("corrupt_jpeg", "corrupt.jpg", _zero_huffman_tables(noisy_jpeg), "decode",
        note="Huffman tables zeroed: headers parse, libjpeg rejects the scan")
    add("text_as_jpeg", "notes.jpg", b"shopping list: eggs, milk\n" * 4, "not_image",
        note="a text file with a .jpg name")
    add("bomb_png", "bomb.png", _bomb_png(20000, 20000), "bomb",
        note="1-bit PNG declaring 20000x20000 (400 MP) in ~50 KB")

    add("unreadable_png", "unreadable.png", good_png, "permission", note="chmod 000")
    locked = out["unreadable_png"].path
    os.chmod(locked, 0)
    if _readable(locked):  # root (or CAP_DAC_OVERRIDE) ignores the mode bits
        out["unreadable_png"] = CorpusEntry(
            path=locked, expected="ok", size=(64, 48), pixels=_QUADRANTS,
            note="chmod 000, but readable: running with root privileges",
        )

    link = directory / "broken_link.jpg"
    try:
        os.symlink("no_such_target.jpg", link)  # relative: stays broken if the folder moves
        out["broken_symlink"] = CorpusEntry(path=link, expected="broken_link",
                                            note="symlink to a missing file")
    except (OSError, NotImplementedError):
        pass  # e.g. Windows without the symlink privilege

    odd = directory / os.fsdecode(b"bad\xff name.png")
    try:
        with open(os.fsencode(odd), "wb") as fh:
            fh.write(good_png)
        out["non_utf8_name"] = CorpusEntry(path=odd, expected="ok", size=(64, 48), pixels=_QUADRANTS,
                                           note="file name with a non-UTF-8 byte (0xff)")
    except (OSError, UnicodeError):
        pass  # e.g. macOS APFS refuses names that are not UTF-8
    return out


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _quadrant_picture() -> Image.Image:
    image = Image.new("RGB", (64, 48), RED)
    image.paste(GREEN, (32, 0, 64, 24))
    image.paste(BLUE, (0, 24, 32, 48))
    image.paste(YELLOW, (32, 24, 64, 48))
    return image


def _halves(size: tuple[int, int], left: RGB, right: RGB) -> Image.Image:
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def _frames(fmt: str, first: RGB, second: RGB) -> bytes:
    frames = [Image.new("RGB", (20, 10), colour) for colour in (first, second)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def _zero_huffman_tables(jpeg: bytes) -> bytes:
    """Blank every DHT payload. Garbage in the entropy data is no good: libjpeg resyncs and
    decodes grey blocks without an error; an all-zero Huffman table is always rejected."""
    data = bytearray(jpeg)
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xC4:
            data[pos + 4 : pos + 2 + length] = bytes(length - 2)
        if marker == 0xDA:  # start of scan: entropy data follows, no more segments to parse
            break
        pos += 2 + length
    if data == jpeg:
        raise ValueError("no DHT segment found before the scan; cannot corrupt this JPEG")
    return bytes(data)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG; rows of zeros deflate ~1000:1, so ~0.1 s and little memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row_block = bytes(1 + (width + 7) // 8) * 100  # filter byte + packed bits, 100 rows at once
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row_block) for _ in range(height // 100))
    idat += deflate.compress(bytes(1 + (width + 7) // 8) * (height % 100)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return True
    except PermissionError:
        return False
