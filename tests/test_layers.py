"""The import contract: layers point one way, nothing imports in a cycle, ONNX tagging needs no torch.

A static scan (``ast``) of every module under ``pipeline/attrtag`` and ``export/attrtag_onnx``,
function-level imports included, so a lazy import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"attrtag": ROOT / "pipeline" / "attrtag", "attrtag_onnx": ROOT / "export" / "attrtag_onnx"}

# Bottom to top. A module may import modules of its own layer or of layers below it, never above.
# The first matching prefix places a module (most specific prefixes first within the list).
LAYERS: list[tuple[str, ...]] = [
    ("attrtag.errors", "attrtag._yaml", "attrtag._files", "attrtag._lock", "attrtag._sniff", "attrtag.schema"),
    ("attrtag.data",),  # images, preprocess, manifest, tables, batches, loader, synthetic
    ("attrtag.card", "attrtag.zeroshot", "attrtag.evaluation.metrics"),
    ("attrtag.model",),
    ("attrtag.runtime",),
    ("attrtag.evaluation",),
    ("attrtag.training",),
    ("attrtag.auditing",),  # out-of-fold trainings and their dynamics -> suspect labels
    ("attrtag.tagging", "attrtag_onnx"),
    ("attrtag.review",),  # tags -> FiftyOne, Label Studio, HTML report; corrections -> manifest
    ("attrtag.api", "attrtag"),  # the package itself re-exports the API lazily
    ("attrtag.commands", "attrtag.cli", "attrtag.__main__"),
]

# Deprecated aliases of moved modules re-export from below; they are the only modules allowed
# to sit outside the layers above (they import nothing of their own).
ALIASES = {"attrtag_onnx.runtime", "attrtag_onnx.onnx_export"}


def module_name(path: Path) -> str:
    for top, folder in SOURCES.items():
        if folder in path.parents or path.parent == folder:
            rel = path.relative_to(folder.parent).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise ValueError(path)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for folder in SOURCES.values() for p in sorted(folder.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (module level, functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            # The longest prefix that is a project module: "attrtag.data.images.load_rgb" -> attrtag.data.images.
            parts = t.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    if candidate != name:
                        found.add(candidate)
                    break
    return found


def layer_of(name: str) -> int:
    best = (-1, -1)  # (prefix length, layer)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best[0]:
                best = (len(p), i)
    if best[1] < 0:
        raise AssertionError(f"module {name} is in no layer; add it to LAYERS in {__file__}")
    return best[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    # A package's __init__ (e.g. attrtag.data) is also an edge target when a submodule is
    # imported, because Python runs it first; the scan counts the submodule itself.
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_is_in_a_layer(graph: dict[str, set[str]]) -> None:
    for name in graph:
        if name not in ALIASES:
            layer_of(name)


def test_no_import_goes_up_the_stack(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, dsts in sorted(graph.items()) if src not in ALIASES
        for dst in sorted(dsts) if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports that go up the stack:\n" + "\n".join(upward)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # Tarjan-free: a DFS that reports the first back edge it meets, with the path.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_contract_catches_what_it_should(tmp_path: Path) -> None:
    # The scanner itself must see a function-level import and resolve relative imports.
    fake = {"attrtag.data.images": Path("x"), "attrtag.tagging.engine": Path("y"), "attrtag.data": Path("z")}
    src = tmp_path / "_probe.py"  # read as if it were attrtag/data/_probe.py
    src.write_text("def f():\n    from ..tagging.engine import tag_paths\n    from . import images\n")
    found = imports_of("attrtag.data._probe", src, {**fake, "attrtag.data._probe": src})
    assert found == {"attrtag.tagging.engine", "attrtag.data", "attrtag.data.images"}
    assert layer_of("attrtag.tagging.engine") > layer_of("attrtag.data._probe")


def test_modules_and_functions_stay_readable() -> None:
    # One idea per module: 400 lines at most; a function that needs more than 60 lines (its
    # docstring included) wants to be several (issues 12 and 18).
    sizes = {n: p.read_text(encoding="utf-8") for n, p in all_modules().items()}
    assert {n: len(t.splitlines()) for n, t in sizes.items() if len(t.splitlines()) > 400} == {}
    long = {
        f"{name}.{node.name}": node.end_lineno - node.lineno + 1
        for name, text in sizes.items() for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    }
    assert long == {}


def test_import_attrtag_and_the_onnx_tagging_path_import_no_torch() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import attrtag, attrtag.api, attrtag.tagging, attrtag.tagging.job, attrtag.zeroshot, attrtag.runtime
        import attrtag.runtime.onnx_backend, attrtag.card, attrtag.data, attrtag.data.batches, attrtag.commands.tag
        import attrtag.commands.classify, attrtag.training, attrtag_onnx, attrtag_onnx.metadata
        print(json.dumps(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p.parent) for p in SOURCES.values())}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
