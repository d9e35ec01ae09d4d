"""YAML loading that remembers line numbers and refuses duplicate keys.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and forgets where each
value came from; schema and rules errors must name the file and line, so we walk the composed
node tree ourselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SchemaError

KeyPath = tuple[Any, ...]


@dataclass
class YamlDoc:
    """A parsed YAML document plus the 1-based line of every key and list item."""

    path: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, *keys: Any) -> int:
        """Line of the deepest known prefix of ``keys`` (1 when nothing is known)."""
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                return self.lines[keys[:n]]
        return 1

    def where(self, *keys: Any) -> str:
        """``"file:line"`` for error messages."""
        return f"{self.path}:{self.line(*keys)}"


def load_yaml(path: str | Path, *, raw_scalars: bool = True, text: str | None = None) -> YamlDoc:
    """Parse a YAML file keeping line numbers.

    Args:
        path: the file (also used in messages when ``text`` is given).
        raw_scalars: keep every scalar as the string written in the file, so that labels such
            as ``yes``, ``no``, ``on`` or ``1`` stay strings (YAML 1.1 would turn them into
            booleans and numbers). ``null``/``~``/empty stay ``None``.
        text: the YAML text, when it does not come from ``path``.

    Returns:
        The document with its line table.

    Raises:
        SchemaError: unreadable file, YAML syntax error or duplicate key, naming file and line.
    """
    path = str(path)
    node = _compose(path, text)
    doc = YamlDoc(path=path, data=None)
    if node is not None:
        doc.data = _Walker(doc, raw_scalars).value(node, ())
    return doc


def _compose(path: str, text: str | None) -> yaml.Node | None:
    """The node tree of ``text`` (read from ``path`` when None); None for an empty document."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SchemaError(f"{path}: cannot read YAML file ({err})") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SchemaError(f"{path}{line}: invalid YAML ({problem})") from None


class _Walker:
    """Builds the data of a node tree, recording in ``doc.lines`` where every key and item is."""

    def __init__(self, doc: YamlDoc, raw_scalars: bool) -> None:
        self.doc = doc
        self.raw_scalars = raw_scalars
        self.constructor = yaml.SafeLoader("")

    def value(self, n: yaml.Node, key_path: KeyPath) -> Any:
        self.doc.lines.setdefault(key_path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            return self.mapping(n, key_path)
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, item in enumerate(n.value):
                self.doc.lines[key_path + (i,)] = item.start_mark.line + 1
                items.append(self.value(item, key_path + (i,)))
            return items
        value = self.constructor.construct_object(n, deep=True)
        if value is None:
            return None
        return n.value if self.raw_scalars else value

    def mapping(self, n: yaml.MappingNode, key_path: KeyPath) -> dict[Any, Any]:
        """A mapping; a key written twice is an error naming both lines (PyYAML keeps the last)."""
        lines = self.doc.lines
        out: dict[Any, Any] = {}
        for k_node, v_node in n.value:
            key = k_node.value if isinstance(k_node, yaml.ScalarNode) else self.value(k_node, key_path)
            if key in out:
                raise SchemaError(
                    f"{self.doc.path}:{k_node.start_mark.line + 1}: duplicate key '{key}' "
                    f"(first at line {lines[key_path + (key,)]})"
                )
            lines[key_path + (key,)] = k_node.start_mark.line + 1
            out[key] = self.value(v_node, key_path + (key,))
        return out
