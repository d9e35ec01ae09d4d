"""Parameters in the library, flags in the CLI: one table (``attrtag.cli.FLAGS``) maps them.

Library text writes a parameter in single backticks; ``str(err)`` shows the Python name, the
CLI the flag. Checked three ways: every parameter a library message names is in the table, every
flag in the table exists, and a sample of errors reads right in both wordings.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any, Callable

import pytest

import attrtag
from attrtag.cli import FLAGS, build_parser, main
from attrtag.errors import PARAMETER, AttrtagError
from tests.helpers import cli_files

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "pipeline" / "attrtag", ROOT / "export" / "attrtag_onnx"]


def _texts(path: Path) -> list[tuple[int, str]]:
    """String literals of a module, docstrings left out; an f-string's values read as ``{}``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def test_every_parameter_a_library_message_names_has_a_flag() -> None:
    missing = []
    for folder in LIBRARY:
        for path in sorted(folder.rglob("*.py")):
            for line, text in _texts(path):
                for m in PARAMETER.finditer(text):
                    name, value = m.group(1), m.group(2)
                    if name not in FLAGS and f"{name}={value}" not in FLAGS:
                        missing.append(f"{path.relative_to(ROOT)}:{line}: `{m.group(0)[1:-1]}`")
    assert not missing, "parameters without a flag in attrtag.cli.FLAGS:\n" + "\n".join(missing)


def _parser_words(parser: argparse.ArgumentParser) -> set[str]:
    words: set[str] = set()
    for action in parser._actions:  # argparse keeps no public list of its options
        words.update(action.option_strings)
        if not action.option_strings and action.metavar:
            words.add(str(action.metavar))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                words |= _parser_words(sub)
    return words


def test_every_flag_in_the_table_exists() -> None:
    words = _parser_words(build_parser())
    absent = {k: v for k, v in FLAGS.items() if v not in words}
    assert not absent, f"flags in FLAGS that no command has: {absent}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return cli_files(tmp_path_factory.mktemp("flags"))


# (what the library is called with, the library's words, the command line, the CLI's words)
CASES: list[tuple[Callable[[dict[str, Path]], Any], str, Callable[[dict[str, Path]], list[str]], str]] = [
    (lambda f: attrtag.load(f["onnx"], device="cpu", top_k=0), "top_k must be at least 1, got 0",
     lambda f: ["tag", f["onnx"], f["images"], "--out", f["dir"] / "t.jsonl", "--top-k", "0"],
     "--top-k must be at least 1, got 0"),
    (lambda f: attrtag.load(f["onnx"], batch_size=0), "batch_size must be at least 1",
     lambda f: ["tag", f["onnx"], f["images"], "--out", f["dir"] / "t.jsonl", "--batch-size", "0"],
     "--batch-size must be at least 1"),
    (lambda f: attrtag.load(f["onnx"], device="gpu"), "device=gpu: not a device",
     lambda f: ["tag", f["onnx"], f["images"], "--out", f["dir"] / "t.jsonl", "--device", "gpu"],
     "--device gpu: not a device"),
    (lambda f: attrtag.load(f["onnx"], device="cpu", rules=False, class_top_k=2),
     "class_top_k needs class rules, but rules=False was given; pass rules=R",
     lambda f: ["tag", f["onnx"], f["images"], "--out", f["dir"] / "t.jsonl", "--no-rules", "--class-top-k", "2"],
     "--class-top-k needs class rules, but --no-rules was given; pass --rules R"),
    (lambda f: attrtag.load(f["onnx"], device="cpu").tag_to(f["dir"] / "t.xlsx", f["images"]),
     "(or fmt jsonl/csv/parquet to choose one for this name)",
     lambda f: ["tag", f["onnx"], f["images"], "--out", f["dir"] / "t.xlsx"],
     "(or --format jsonl/csv/parquet to choose one for this name)"),
    (lambda f: attrtag.classify(f["tags"], f["dir"] / "c.jsonl", rules=f["rules"], seen=["A"]),
     "seen names the classes gamma applies to; pass gamma=G too",
     lambda f: ["classify", f["tags"], "--out", f["dir"] / "c.jsonl", "--rules", f["rules"], "--seen", "A"],
     "--seen names the classes --gamma applies to; pass --gamma G too"),
    (lambda f: attrtag.report(f["tags"], f["dir"] / "r.html", thumbnails="inline"), "thumbnails=inline: not one of",
     lambda f: ["report", f["tags"], "--out", f["dir"] / "r.html", "--thumbnails", "inline"],
     "--thumbnails inline: not one of"),
    (lambda f: attrtag.export(f["ckpt"], f["dir"] / "m.onnx", int8=True), "int8=True needs calib_manifest=M",
     lambda f: ["export", "--checkpoint", f["ckpt"], "--out", f["dir"] / "m.onnx", "--int8"],
     "--int8 needs --calib-manifest M"),
    (lambda f: attrtag.evaluate(f["onnx"], f["manifest"], unseen=["x"], device="cpu"), "unseen needs rules=R",
     lambda f: ["evaluate", "--model", f["onnx"], "--manifest", f["manifest"], "--unseen", "x"],
     "--unseen needs --rules R"),
    (lambda f: attrtag.calibrate(f["onnx"], f["manifest"], out=f["dir"] / "c.pt"),
     "c.pt: must be another file with model.onnx's suffix '.onnx' (or pass in_place=True to replace the model)",
     lambda f: ["calibrate", f["onnx"], "--manifest", f["manifest"], "--out", f["dir"] / "c.pt"],
     "c.pt: must be another file with model.onnx's suffix '.onnx' (or pass --in-place to replace the model)"),
]


@pytest.mark.parametrize("call, library, argv, cli", CASES, ids=[c[3].split()[0] for c in CASES])
def test_an_error_names_the_parameter_in_python_and_the_flag_on_the_command_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], call: Any, library: str, argv: Any, cli: str,
) -> None:
    with pytest.raises(AttrtagError) as err:
        call(files)
    assert library in str(err.value) and "--" not in str(err.value), str(err.value)
    assert main([str(a) for a in argv(files)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and cli in stderr, stderr


@pytest.mark.parametrize("argv, words", [
    (["tag", "m.onnx", "x", "--batch-size", "x"], "attrtag tag: error: argument --batch-size: invalid int value: 'x'"),
    (["tagg"], "attrtag: error: argument COMMAND: invalid choice: 'tagg'"),
    (["rules", "suggest", "--cover"], "attrtag rules suggest: error: argument --cover: expected one argument"),
    (["export", "--checkpoint", "c.pt"], "the following arguments are required: --out"),
])
def test_an_argument_argparse_refuses_is_one_line_too(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                      words: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and words in err and "--help)" in err, err
