"""Which inputs an output already holds, however their paths are spelled.

Records are keyed by the path as the run that wrote them was given it (``photos/a.jpg``), and
a resume skips the inputs it finds there. The same images given another way (``$PWD/photos``,
or ``.`` from inside ``photos/``) would otherwise be tagged a second time, silently. So an input
whose own spelling is not in the output is looked for by place too: its absolute path against
each record's path resolved from the folder the output's relative paths are relative to (its
header's ``paths_relative_to``; for a file from before it was stored, this run's folder).

New records keep every relative path in a file relative to that one folder: a run from another
folder writes the images it adds with absolute paths.
"""
from __future__ import annotations

import os
from typing import Collection, Sequence

from ..data.images import display_path


def working_folder() -> str | None:
    """This process's folder as records would name it, or None where it no longer exists (a
    folder deleted under a running shell: absolute inputs still tag, and nothing counts from it)."""
    try:
        return display_path(os.getcwd())
    except OSError:
        return None


def recorded_as(paths: Sequence[str], shown: Sequence[str], done: Collection[str],
                relative_to: str | None) -> list[str | None]:
    """For each input, the path its record has in the output, or None where it has none.

    Args:
        paths: this run's image paths.
        shown: the same as records name them (:func:`attrtag.data.images.display_path`).
        done: the record paths the output holds.
        relative_to: the folder its relative record paths are relative to (None: this one).

    Returns:
        One entry per input: its own spelling where the output has it, else the spelling of the
        record at the same place, else None.
    """
    found: list[str | None] = [d if d in done else None for d in shown]
    if not done or None not in found:
        return found  # nothing to look for: no work for a fresh output or a plain resume
    base = relative_to or working_folder()
    if base is None:
        return found
    by_place: dict[str, str] = {}
    for record in sorted(done):  # sorted: which of two spellings of one place wins does not vary
        by_place.setdefault(os.path.normpath(os.path.join(base, record)), record)
    return [f if f is not None else by_place.get(display_path(os.path.abspath(p))) for p, f in zip(paths, found)]


def as_recorded_here(paths: Sequence[str], relative_to: str | None) -> list[str]:
    """``paths`` as new records should name them: absolute where this run's folder is not the
    one the output's relative paths are relative to (else two runs' relative paths would mix)."""
    if relative_to is None or os.path.normpath(relative_to) == working_folder():
        return list(paths)
    return [p if os.path.isabs(p) else os.path.abspath(p) for p in paths]
