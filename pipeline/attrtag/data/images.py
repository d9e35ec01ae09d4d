"""Decoding one image file into an 8-bit RGB picture, or a clear reason why it cannot be.

Torch-free on purpose: the ONNX tagging path uses this without importing torch.

Every failure is an :class:`~attrtag.errors.ImageDecodeError` whose message starts with the
printable path and whose ``reason`` attribute is one short code from :data:`REASONS`, so a batch
tool can write ``{"error": err.reason, "message": str(err)}`` and carry on with the next file:

``missing``      no such file (or a parent folder is missing)
``broken_link``  a symbolic link whose target does not exist (or a link loop)
``permission``   the file or a folder above it cannot be read by this user
``not_file``     a directory, FIFO, socket or device rather than a regular file
``unreadable``   any other operating-system error while reading (EIO, ...)
``empty``        a zero-byte file
``not_image``    not in a supported image format (:data:`DECODE_FORMATS`)
``truncated``    the file ends before the image data does (an interrupted copy or download)
``bomb``         more pixels than ``max_pixels``; refused before any pixel is decoded
``decode``       any other corruption, or a pixel mode that has no RGB meaning

Pillow global state is read, not lowered: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays whatever
the rest of the program set it to, and so does ``Image.MAX_IMAGE_PIXELS`` unless a caller allows
more pixels than it does (Pillow would refuse those images itself, before our own check).
"""
from __future__ import annotations

import logging
import os
import stat
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageDecodeError

logger = logging.getLogger(__name__)

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]  # what open() accepts

REASONS = (
    "missing",
    "broken_link",
    "permission",
    "not_file",
    "unreadable",
    "empty",
    "not_image",
    "truncated",
    "bomb",
    "decode",
)

# Pillow's own default (1 GiB / 4 bytes per pixel / 3). Keeping ours no higher means Pillow's
# DecompressionBombWarning, emitted inside Image.open, only fires for images we refuse anyway.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# Pillow can open ~40 formats, some through external programs (EPS runs Ghostscript on load).
# Files we are handed are untrusted, so only the formats photographs actually arrive in are
# tried; MPO (multi-picture JPEG from phone cameras) is opened by the JPEG plugin.
DECODE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm", "pbm"}
)

# JPEG (and MPO, multi-picture JPEG from phones) can decode at 1/2, 1/4 or 1/8 scale in the DCT
# domain; every other format must decode all its pixels.
_SCALED_DECODE_FORMATS = ("JPEG", "MPO")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # the ones that swap width and height

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# C0 and C1 control characters would break one-line logs and terminals; show them escaped.
_CONTROL_ESCAPES = {
    code: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
}

_warned_truncated_setting = False


def display_path(path: PathArg) -> str:
    """A printable, UTF-8-safe form of a path for messages and JSON records.

    Bytes that are not valid UTF-8 (e.g. a Latin-1 name on a Linux disk, or a ``str`` carrying
    ``os.fsdecode`` surrogate escapes) become ``\\xNN``; control characters are escaped too.
    Not reversible: keep the original path for opening the file.

    Args:
        path: a ``str``, ``bytes`` or path-like object.

    Returns:
        A string that encodes to UTF-8 and prints on one line.
    """
    try:
        # os.fsencode undoes surrogate escapes, giving the exact bytes on disk.
        text = os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        # A str with lone surrogates that did not come from os.fsdecode (cannot be on disk).
        text = str(os.fspath(path)).encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROL_ESCAPES)


def is_image_path(path: PathArg) -> bool:
    """Whether a file name has one of the image extensions in :data:`IMAGE_EXTENSIONS`.

    Only the name is looked at (case-insensitively); use it to pick files when scanning folders.

    Args:
        path: a ``str``, ``bytes`` or path-like object.

    Returns:
        True for ``.jpg``, ``.JPEG``, ``.png``, ... names.
    """
    ext = os.path.splitext(os.fsdecode(path))[1]
    return ext[1:].lower() in IMAGE_EXTENSIONS


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any common mode to 8-bit RGB (a new image).

    Transparent pixels (alpha band, palette transparency or a ``transparency`` colour key) are
    composited over white: product photos and logos are often cut out on a transparent
    background, and the RGB values hidden under alpha 0 are arbitrary (often black), which would
    turn a white-background product into a black-background one. 16-bit modes map 0..65535 onto
    0..255 (Pillow's own ``convert("RGB")`` clips them at 255, turning most pixels white).
    CMYK, YCbCr, LAB and HSV use Pillow's conversions; embedded ICC profiles are ignored, as
    timm and torchvision loaders ignore them, so tagging sees the pixels training saw.

    Args:
        image: a loaded Pillow image.

    Returns:
        A new ``RGB`` image of the same size; ``image`` is not modified.

    Raises:
        ValueError: the mode has no RGB meaning (e.g. premultiplied ``La``).
    """
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # a copy when already RGB


def load_rgb(
    path: PathArg, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode one image file into a fully loaded 8-bit RGB image, EXIF orientation applied.

    Multi-frame files (animated GIF, multi-page TIFF, MPO) give their first frame.

    Args:
        path: file to read; ``bytes`` and ``os.fsdecode`` strings open non-UTF-8 names.
        max_pixels: refuse images with more than ``width * height`` pixels, checked from the
            header before decoding. Pillow's ``Image.MAX_IMAGE_PIXELS`` is raised to it where
            it is lower (twice that limit is a hard error inside Pillow's ``Image.open``).
        min_size: ``(width, height)`` the picture must still cover once oriented. A JPEG is
            then decoded at the smallest DCT scale (1/2, 1/4 or 1/8: libjpeg's scaled inverse
            DCT, through Pillow's ``Image.draft``) whose width and height are both at least
            these, which for a 12-megapixel photo and a 224 px model skips most of the decoding
            work. Other formats, and None, decode every pixel.

    Returns:
        A new ``RGB`` image, independent of the file.

    Raises:
        ImageDecodeError: with ``reason`` in :data:`REASONS`; the message names the path.
    """
    _warn_if_truncated_images_allowed()
    st = _stat_regular_file(path)
    if st.st_size == 0:
        raise _error("empty", path, "file is empty (0 bytes)")
    try:
        fh = open(path, "rb")
    except PermissionError:
        why = "permission denied (check the file's owner and mode)"
        raise _error("permission", path, why) from None
    except OSError as err:
        raise _error("unreadable", path, f"cannot open: {err.strerror or err}") from None
    with fh:
        image = _decode(fh, path, max_pixels, min_size)
    return image


def _decode(fh: BinaryIO, path: PathArg, max_pixels: int, min_size: tuple[int, int] | None) -> Image.Image:
    """Open, size-check, load and convert; every Pillow failure becomes an ImageDecodeError."""
    _pillow_allows(max_pixels)
    try:
        try:
            image = Image.open(fh, formats=DECODE_FORMATS)
        except UnidentifiedImageError:
            fh.seek(0)
            head = fh.read(12)
            raise _error(
                "not_image", path, f"not a supported image format ({'/'.join(DECODE_FORMATS)}); "
                f"file starts with {head!r}"
            ) from None
        width, height = image.size
        if width * height > max_pixels:
            raise _error(
                "bomb", path, f"{width}x{height} = {width * height} pixels exceeds the limit of "
                f"{max_pixels} (possible decompression bomb; if it is genuine, raise the limit: --max-pixels, "
                "or max_pixels in Python)"
            )
        if min_size is not None and image.format in _SCALED_DECODE_FORMATS:
            _draft(image, min_size, path)
        image.load()
        orient(image, display_path(path))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # The warning arrives as an exception only under `-W error`-style filters.
        raise _error("bomb", path, f"refused by Pillow's size limit: {err}") from None
    except MemoryError:
        raise  # the machine, not the file, is at fault: a bigger one would decode it
    except OSError as err:
        if err.errno is not None:  # a real I/O error from the OS, not Pillow's "broken data"
            raise _error("unreadable", path, f"read failed: {err.strerror or err}") from None
        raise _classified(path, err) from None
    except Exception as err:  # noqa: BLE001
        # Pillow's plugins raise SyntaxError, ValueError, struct.error, EOFError, zlib.error, ...
        # on hostile input; one bad file must not abort a batch.
        raise _classified(path, err) from None
    try:
        return to_rgb(image)
    except ValueError as err:
        raise _error("decode", path, f"unsupported pixel mode {image.mode!r}: {err}") from None


def _pillow_allows(max_pixels: int) -> None:
    """Raise Pillow's own limit to ``max_pixels`` where it is lower.

    ``Image.open`` refuses images over twice ``Image.MAX_IMAGE_PIXELS`` before we see their
    size, so a caller's larger ``max_pixels`` would not be honoured. It is only ever raised,
    never put back: threads decoding at once cannot then undo one another's setting.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def quiet_pillow_size_warning() -> None:
    """Silence Pillow's DecompressionBombWarning, in processes attrtag owns (its CLI, Ray actors).

    Every image over the limit gets its own ``bomb`` error, in a record or in the one-line
    error; Pillow's two-line Python warning would only repeat one of them on stderr. Library
    callers keep Python's default (the warning, once).
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def orient(image: Image.Image, name: str, *, in_place: bool = True) -> Image.Image:
    """Turn ``image`` upright by its EXIF orientation, as cameras and viewers mean it.

    Args:
        image: a loaded image (a file just decoded, or one a caller opened with PIL).
        name: what to call it in the warning an unreadable orientation gets.
        in_place: turn ``image`` itself; False leaves it as it is and returns an upright copy
            (or ``image`` itself when it is upright already).

    Returns:
        The upright image, without the orientation tag (so turning it twice is a no-op).
    """
    try:
        if in_place:
            ImageOps.exif_transpose(image, in_place=True)
        elif image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            return ImageOps.exif_transpose(image)
    except Exception as err:  # noqa: BLE001 - bad EXIF must not lose a good picture
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, err)
    return image


def _draft(image: Image.Image, min_size: tuple[int, int], path: PathArg) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that still covers ``min_size`` once oriented.

    The scale is applied while decoding, before the EXIF rotation, so a photo stored sideways
    (orientation 5 to 8) must cover the target with width and height swapped.
    """
    width, height = min_size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: exif_transpose will say so after loading
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    before = image.size
    image.draft(image.mode, (max(1, int(width)), max(1, int(height))))
    if image.size != before:
        logger.debug("%s: decoding %dx%d at %dx%d", display_path(path), *before, *image.size)


def _stat_regular_file(path: PathArg) -> os.stat_result:
    """``os.stat`` that names missing, broken-link, permission and not-a-file cases."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            why = f"broken symbolic link (its target {_link_target(path)} does not exist)"
            raise _error("broken_link", path, why) from None
        raise _error("missing", path, "no such file") from None
    except NotADirectoryError:
        why = "no such file (a parent in the path is not a folder)"
        raise _error("missing", path, why) from None
    except PermissionError:
        why = "permission denied on the file or a folder above it"
        raise _error("permission", path, why) from None
    except OSError as err:
        if os.path.islink(path):  # ELOOP
            why = f"symbolic link cannot be resolved ({err.strerror})"
            raise _error("broken_link", path, why) from None
        raise _error("unreadable", path, f"cannot stat: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error("not_file", path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        # Checked before open(): opening a FIFO would block forever.
        raise _error("not_file", path, "is not a regular file (FIFO, socket or device)")
    return st


def _link_target(path: PathArg) -> str:
    """The printable target of a symbolic link, for the broken-link message."""
    try:
        return display_path(os.readlink(path))
    except OSError:
        return "?"


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit single-band images to 8-bit grey RGB, scaling rather than clipping.

    ``I;16*`` and ``I`` are taken as 0..65535 (Pillow puts 16-bit PNG/TIFF/PGM samples there,
    and rescales PGM maxvals to that range). ``F`` has no convention: values within 0..1 are
    taken as normalised intensities, within 0..255 as 8-bit values, anything larger as 16-bit.
    """
    arr = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 1.0 / 257.0)
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    else:
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        grey = ((wide + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    return Image.fromarray(np.ascontiguousarray(grey), mode="L").convert("RGB")


def _classified(path: PathArg, err: BaseException) -> ImageDecodeError:
    """Pillow says "truncated" in both its JPEG and PNG/GIF end-of-data messages."""
    text = str(err) or type(err).__name__
    if "truncated" in text.lower():
        return _error("truncated", path, f"file is truncated, the image data ends early ({text})")
    return _error("decode", path, f"corrupt image data ({type(err).__name__}: {text})")


def _error(reason: str, path: PathArg, why: str) -> ImageDecodeError:
    """An ImageDecodeError whose message starts with the path and whose ``reason`` is a code."""
    err = ImageDecodeError(f"{display_path(path)}: {why}")
    err.reason = reason
    return err


def _warn_if_truncated_images_allowed() -> None:
    # Some libraries set this global to True; then Pillow pads truncated files with grey and we
    # cannot report them. We do not reset it (other code chose it), but say so once.
    global _warned_truncated_setting
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated_setting:
        _warned_truncated_setting = True
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set elsewhere in this process): "
            "truncated images will decode with grey padding instead of failing"
        )
