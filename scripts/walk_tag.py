"""Walk one image from ``attrtag tag`` to its record: which modules it enters, how often it climbs back.

Runs ``attrtag tag MODEL IMAGE --out FILE --workers 0`` in this process (decoding then happens
in the calling thread, so one call stack holds the whole walk) under ``sys.setprofile`` and
records, at every call and return of a project function, the module of the innermost project
frame. Consecutive repeats are merged; that sequence is the walk.

* **rooms**: the distinct project modules the walk enters;
* **climbs back up**: returns to a module of a *higher* layer (the layers of
  ``tests/test_layers.py``) after which the walk goes down again: each one is a place where a
  caller picks a half-made result back up to hand it on, instead of the data flowing one way.
  The walk ends when the record is written (the last step into the output writer), and back and
  forth between the same two modules (a result's methods, say) counts as one trip;
* **calls**: project function calls, for scale.

Start-up (argument parsing, imports) is left out: the walk starts when the command's ``run``
is entered. With ``--model`` absent a random ``test_resnet`` model is exported to a temporary
folder first (needs the ``train`` extra).

    python scripts/walk_tag.py                      # a tiny random model and one 40 px image
    python scripts/walk_tag.py --model m.onnx --image photo.jpg --rules rules.yaml --show
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def layers() -> Any:
    """``layer_of(module)`` from the test suite's import contract (one source for the layers)."""
    spec = importlib.util.spec_from_file_location("_layers", ROOT / "tests" / "test_layers.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.layer_of


def make_model(folder: Path) -> tuple[Path, Path, Path]:
    """A random test_resnet ONNX model, one image and a rules file (the test suite's helpers)."""
    sys.path.insert(0, str(ROOT))
    from attrtag_onnx.export import export_onnx
    from tests.helpers import make_checkpoint, write_images

    ckpt = make_checkpoint(folder / "model.pt")
    onnx = export_onnx(ckpt, folder / "model.onnx", exporter="torchscript").path
    image = write_images(folder / "imgs", 1)[0]
    rules = folder / "rules.yaml"
    rules.write_text("classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n")
    return onnx, image, rules


def walk(argv: list[str], image: str) -> list[str]:
    """The modules the image's data passes through during ``attrtag <argv>``'s ``run``.

    A project call is on the image's path when one of its arguments is the image's path, holds it
    (a list, a dict's values, a dataclass's ``path``), or is (or holds) a value an earlier call on
    the path returned: the pixels, the batch, the probabilities, the record; or when it is a
    method of an object that lists the path (a job's ``todo``). The walk is the
    module of the innermost such call after every call and return.
    """
    from attrtag.cli import build_parser, _command_from_argv

    parser = build_parser(_command_from_argv(argv))
    args = parser.parse_args(argv)
    names = {image, os.path.abspath(image)}
    command = f"attrtag.commands.{argv[0]}"  # the walk starts in the command's run()
    tracked: dict[int, Any] = {}  # id -> the object, kept alive so that its id is not reused
    stack: list[tuple[str, bool]] = []
    seq: list[str] = []

    def carries(value: Any, depth: int = 0) -> bool:
        if id(value) in tracked:
            return True
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value) in names
        if depth > 1:
            return False
        if isinstance(value, dict):
            return any(carries(v, depth + 1) for v in list(value.values())[:64])
        if isinstance(value, (list, tuple)):
            return any(carries(v, depth + 1) for v in value[:64])
        path = getattr(value, "path", None) if hasattr(type(value), "__dataclass_fields__") else None
        return path is not None and carries(path, depth + 1)

    def holds(obj: Any) -> bool:
        """A method's ``self`` works on the image when an attribute lists its path (a job's todo)."""
        values = vars(obj).values() if hasattr(obj, "__dict__") else ()
        return any(v in names if isinstance(v, str) else isinstance(v, list) and any(x in names for x in v[:64]
                   if isinstance(x, str)) for v in values)

    def track(value: Any) -> None:
        # Containers, arrays and objects only: ints, strings and None are shared by everybody.
        if isinstance(value, (type(None), bool, int, float, str, bytes)):
            return
        tracked[id(value)] = value
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        for v in items:
            if isinstance(v, (dict, list, tuple)):
                track(v)
            elif not isinstance(v, (type(None), bool, int, float, str, bytes)):
                tracked[id(v)] = v

    def note() -> None:
        top = next((m for m, on in reversed(stack) if on), command)
        if not seq or seq[-1] != top:
            seq.append(top)

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        name = frame.f_globals.get("__name__", "")
        if not (name == "attrtag" or name.startswith(("attrtag.", "attrtag_onnx"))):
            return
        if event == "call":
            code = frame.f_code
            params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            on = any(carries(frame.f_locals.get(p)) for p in params if p != "self")
            stack.append((name, on or ("self" in params and holds(frame.f_locals.get("self")))))
        elif stack:
            _, on = stack.pop()
            if on and arg is not None:
                track(arg)
        note()

    sys.setprofile(profile)
    try:
        code = args.func(args)
    finally:
        sys.setprofile(None)
    if code:
        raise SystemExit(f"attrtag {' '.join(argv)} exited with {code}")
    return seq


def count(seq: list[str], layer_of: Any) -> dict[str, Any]:
    """Rooms, climbs back up (see the module docstring) and the walk itself."""
    # The walk ends when the record is written (its last step into the output writer); going
    # back and forth between the same two rooms (a result's methods, say) is one trip.
    end = max((i for i, m in enumerate(seq) if m == "attrtag.tagging.files"), default=len(seq) - 1)
    walk = _one_trip_each(seq[: end + 1])
    # Layer 0 is the bottom of the stack (errors, schema), the commands the top.
    level = [layer_of(m) for m in walk]
    last_down = max((i for i in range(1, len(walk)) if level[i] < level[i - 1]), default=0)
    climbs = [f"{walk[i - 1]} -> {walk[i]}" for i in range(1, last_down) if level[i] > level[i - 1]]
    rooms = sorted(set(walk))
    return {"rooms": len(rooms), "climbs": len(climbs), "modules": rooms, "climb_steps": climbs, "walk": walk}


def _one_trip_each(walk: list[str]) -> list[str]:
    """``A B A B A`` -> ``A B A``: repeated round trips between the same two rooms merged."""
    out: list[str] = []
    for m in walk:
        if len(out) >= 3 and out[-1] == out[-3] and out[-2] == m:
            out.pop()  # ... A B A + B: the walk is back in B as before; drop the second A
            continue
        out.append(m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=".onnx model (default: a random test_resnet)")
    ap.add_argument("--image", help="the image to tag")
    ap.add_argument("--rules", help="class rules (default with the random model: two classes)")
    ap.add_argument("--show", action="store_true", help="print the climbs and the walk")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, image, rules = (Path(args.model), Path(args.image), args.rules) if args.model else make_model(Path(tmp))
        argv = ["tag", str(model), str(image), "--out", str(Path(tmp) / "tags.jsonl"), "--workers", "0",
                "--no-progress", "--device", "cpu"] + (["--rules", str(rules)] if rules else [])
        walk(argv, str(image))  # once to warm imports and the graph cache: the walk below is a steady-state run
        argv += ["--overwrite"]
        result = count(walk(argv, str(image)), layers())
    print(f"rooms {result['rooms']}, climbs back up {result['climbs']}, walk length {len(result['walk'])}")
    if args.show:
        print("modules: " + ", ".join(result["modules"]))
        print("climbs:\n  " + "\n  ".join(result["climb_steps"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
