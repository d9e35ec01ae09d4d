"""Turn ``attrtag tag`` INPUT arguments into one sorted, de-duplicated list of image paths.

An INPUT is, in the order these rules are tried:

* ``@LIST`` or an existing ``*.txt`` file: a list file, one path per line, relative to the list
  file's folder (absolute paths stay absolute). Blank lines and lines starting with ``#`` are
  skipped. Each listed path is used as it is (a folder listed there is expanded like a folder
  given on the command line); a listed path that does not exist is kept, so the image gets an
  error record (``missing``) instead of vanishing.
* A folder: every file below it, recursively, whose extension is an image extension
  (:func:`attrtag.data.images.is_image_path`). Symbolic links to files are included, broken links too
  (they get a ``broken_link`` error record); links to folders are not followed, so a link loop
  cannot make the walk endless.
* A pattern containing ``*``, ``?`` or ``[``: :func:`glob.glob` with ``recursive=True`` (so ``**``
  crosses folders). Matched folders are expanded as above and matched files are filtered by
  image extension, so ``photos/**`` selects what ``photos`` would.
* Anything else: one image path. A broken symbolic link is kept (error record
  ``broken_link``); a path that does not exist at all is an :class:`InputError` (a typo on the
  command line should stop the run before the model loads, not end as "failed 1"), unless
  ``must_exist=False`` (the Python API, which records it as ``missing``).

An INPUT that yields nothing at all (an empty folder, a pattern with no match, an empty list
file) is an :class:`InputError`, as is a list file that cannot be read: these are typos, not
bad images.

Paths are normalised (:func:`os.path.normpath`; relative ones stay relative), de-duplicated on
their absolute form, and sorted by their raw bytes (:func:`os.fsencode`), so file names that are
not valid UTF-8 sort the same way on every run. This order is the order of the output records.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Iterable, Sequence

from ..errors import InputError
from ..data.images import display_path, is_image_path

_logger = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


class ImagePaths(list):
    """Paths :func:`expand_inputs` made: expanding them again returns them as they are, so a
    caller can check its INPUTs early (before a model loads) and hand the result on.

    Attributes:
        display: each path as records name it (:func:`attrtag.data.images.display_path`).
    """

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__(paths)
        # The same string object where nothing needed escaping: no second copy of every path.
        self.display = [d if d != p else p for p, d in ((p, display_path(p)) for p in self)]


def expand_inputs(inputs: Sequence[str], *, must_exist: bool = True) -> ImagePaths:
    """Expand INPUT arguments (folders, files, globs, list files) into sorted image paths.

    Args:
        inputs: command-line INPUT strings, see the module docstring for each form.
        must_exist: an INPUT naming a path that does not exist is an error (True), or kept
            so that it gets a ``missing`` error record (False). Entries of list files are
            always kept.

    Returns:
        Unique paths (``str``; undecodable bytes kept via the file system's surrogate escapes),
        sorted by their raw bytes.

    Raises:
        InputError: no inputs, an INPUT that matches nothing or does not exist, or an
            unreadable list file.
    """
    if isinstance(inputs, ImagePaths):
        return inputs
    if not inputs:
        raise InputError("no `inputs` given; name image files, folders, glob patterns or @list.txt files")
    found: dict[str, str] = {}  # absolute key -> path as it will be reported
    for arg in inputs:
        paths = list(_expand_one(arg, must_exist))
        if not paths:
            raise InputError(f"`inputs` '{arg}' matches no image files; check the path or pattern")
        for p in paths:
            p = os.path.normpath(p)
            key = os.path.abspath(p)
            # The same file spelled twice ("a.jpg", "./a.jpg", "/abs/a.jpg"): keep the spelling
            # that sorts first so the choice does not depend on argument order.
            if key not in found or os.fsencode(p) < os.fsencode(found[key]):
                found[key] = p
    paths = ImagePaths(sorted(found.values(), key=os.fsencode))
    _logger.debug("%d INPUT arguments expanded to %d paths", len(inputs), len(paths))
    return paths


def is_glob(arg: str) -> bool:
    """True when ``arg`` contains glob characters (``*``, ``?``, ``[``) and is not an existing path."""
    return any(c in _GLOB_CHARS for c in arg) and not os.path.lexists(arg)


def _expand_one(arg: str, must_exist: bool) -> Iterable[str]:
    if arg.startswith("@"):
        return read_list_file(arg[1:])
    if arg.lower().endswith(".txt") and os.path.isfile(arg):
        return read_list_file(arg)
    if os.path.isdir(arg):
        return walk_images(arg)
    if is_glob(arg):
        return _expand_glob(arg)
    if must_exist and not os.path.lexists(arg):
        raise InputError(f"`inputs` '{arg}': no such file or folder; check the path")
    return [arg]  # a file, a broken link or (not must_exist) a missing path: the decoder reports which


def _expand_glob(pattern: str) -> list[str]:
    out: list[str] = []
    walked: list[str] = []
    # Sorted, a folder comes before everything below it. "photos/**" matches every folder in
    # the tree; walking only the topmost matched ones avoids listing each file once per level.
    for match in sorted(glob.glob(pattern, recursive=True)):
        if os.path.isdir(match):
            if not any(_is_below(match, w) for w in walked):
                walked.append(match)
                out.extend(walk_images(match))
        elif is_image_path(match):
            out.append(match)
    return out


def _is_below(path: str, folder: str) -> bool:
    rel = os.path.relpath(path, folder)
    return rel.split(os.sep)[0] != os.pardir


def walk_images(folder: str) -> list[str]:
    """All files with an image extension below ``folder`` (recursive; links to files included).

    Args:
        folder: the folder to walk.

    Returns:
        Paths joined onto ``folder``, unsorted.
    """
    out: list[str] = []
    # followlinks=False: a link to a folder shows up in ``dirnames`` but is not entered, which
    # rules out cycles; links to files (and broken links) show up in ``filenames``.
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=False, onerror=_walk_error):
        out.extend(os.path.join(dirpath, f) for f in filenames if is_image_path(f))
    return out


def _walk_error(err: OSError) -> None:
    # An unreadable sub-folder cannot be listed, so its images cannot get records; say so
    # rather than silently tagging fewer files.
    _logger.warning("cannot list folder %s (%s); its images are skipped", err.filename, err.strerror)


def read_list_file(list_path: str) -> list[str]:
    """Paths listed in a text file, one per line, resolved against the file's folder.

    Args:
        list_path: the list file. Read as bytes and decoded with the file system encoding
            (surrogate escapes), so listed names that are not valid UTF-8 still work.

    Returns:
        The listed paths (folders among them expanded), in file order.

    Raises:
        InputError: the list file cannot be read.
    """
    try:
        with open(list_path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise InputError(f"list file '{list_path}': cannot read it ({err.strerror}); check the path") from None
    base = os.path.dirname(list_path)
    out: list[str] = []
    for raw in data.split(b"\n"):
        raw = raw.rstrip(b"\r")
        if not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        p = os.path.join(base, os.fsdecode(raw))  # join keeps absolute listed paths absolute
        if os.path.isdir(p):
            out.extend(walk_images(p))
        else:
            out.append(p)
    return out
