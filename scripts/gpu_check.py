"""attrtag's whole GPU path in one prepared run, for the first GPU machine (issue 23).

    bash scripts/gpu_check.sh OUT            # installs as the README says, then runs this
    python scripts/gpu_check.py OUT [--cpu-dry-run] [--budget S] [--only STEP,...] [--limit STEP=S]

Steps run one after another, each in its own process group with its own time limit: a step
still running at its limit is stopped with everything it started, and says so. The run keeps
within ``--budget`` seconds counted from ``--started`` (``gpu_check.sh`` passes its own start,
so installing counts too); a step that would start with too little time left is not run, and
says so. Every check appends one JSON line to ``OUT/results.jsonl`` when it ends; ``OUT/summary.md``
(rewritten after each step) holds the tables; ``OUT/steps.log`` has every step's output.

Steps, most important first: env, data (synthetic images, 4032x3024 photos), model, gpu-tests
(``pytest -m gpu``), decode (the ceiling with 1/4/8/15 workers), train (AMP, channels-last),
export (fp32, fp16, parity on the GPU), tag-* (CUDA fp32/fp16 on photos and 224 px images),
device (``--device cuda`` with a checkpoint, ``auto``), torchrun (one process, NCCL,
``--sync-bn``), then TensorRT: engine build, and tag-* as for CUDA. ``--cpu-dry-run`` runs the
same steps at small sizes on the CPU (test_resnet, the CPU provider; TensorRT then skips), so
CI keeps the script working (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_infer as infer  # noqa: E402
import gpu_check_steps as steps  # noqa: E402
from gpu_check_summary import write_summary  # noqa: E402

DEFAULT_BUDGET = 450  # seconds: under the 8 minutes, with room to stop a step and summarise
MIN_START = 5  # seconds: a step is not started with less than this left


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[steps.Context], None]
    limit: float  # seconds on a GPU machine
    dry_limit: float  # seconds in the CPU dry run
    needs: tuple[str, ...] = ()  # checks that must have passed first


def plan() -> list[Step]:
    """Every step in running order, with its limits and what it needs."""
    plan = [
        Step("env", steps.step_env, 40, 40),
        Step("data", steps.step_data, 90, 60),
        Step("model", steps.step_model, 60, 40),
        Step("gpu-tests", steps.step_gpu_tests, 150, 90),
        Step("decode", infer.step_decode, 90, 60, ("data", "model")),
        Step("train", steps.step_train, 120, 60, ("data",)),
        Step("export", infer.step_export, 150, 90, ("model",)),
    ]
    for name, run in infer.tag_steps().items():
        precision = name.rsplit("-", 1)[1]
        needs = (f"export {precision}",)
        if "tensorrt" in name:
            needs += (f"tensorrt build {precision}",)
        plan.append(Step(name, run, 150 if name.startswith("trt-build") else 45, 30, needs))
        if name == "tag-small-cuda-fp16":  # the last CUDA tagging step: the rest of the GPU path before TensorRT
            plan += [Step("device", infer.step_device, 60, 40, ("export fp32",)),
                     Step("torchrun", steps.step_torchrun, 120, 60, ("data",))]
    return plan


# -- the driver -----------------------------------------------------------------------------------
class Run:
    """The parent process: starts each step, enforces its limit and the budget, keeps the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.out, self.dry = Path(args.out), args.cpu_dry_run
        self.deadline = args.started + args.budget
        self.budget, self.limits, self.work = args.budget, dict(args.limit), Path(args.work)
        self.results = self.out / "results.jsonl"

    def statuses(self) -> dict[str, str]:
        """Each check's status; a step's own (timeout, error) where it recorded no check of its name."""
        lines = [json.loads(x) for x in self.results.read_text().splitlines()] if self.results.is_file() else []
        steps = {r["check"]: r["status"] for r in lines if r.get("kind") == "step"}
        return {**steps, **{r["check"]: r["status"] for r in lines if r.get("kind") != "step"}}

    def record(self, **line: object) -> None:
        with open(self.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def missing(self, step: Step) -> tuple[str, str] | None:
        """(status, why) when a check this step needs did not pass."""
        done = self.statuses()
        for need in step.needs:
            if done.get(need) != "ok":
                said = done.get(need, "not run")
                return ("skip" if said == "skip" else "not-run"), f"needs '{need}' ({said})"
        return None

    def start(self, step: Step) -> None:
        left = self.deadline - time.time()
        blocked = self.missing(step)
        if left < MIN_START:
            blocked = ("not-run", f"out of time: the run's budget of {self.budget:.0f} s was spent")
        if blocked is not None:
            self.record(check=step.name, step=step.name, kind="step", status=blocked[0], message=blocked[1])
            return
        limit = min(self.limits.get(step.name, step.dry_limit if self.dry else step.limit), left)
        status, seconds, message = self.child(step, limit)
        self.record(check=step.name, step=step.name, kind="step", status=status, seconds=round(seconds, 1),
                    limit=round(limit, 1), message=message)

    def child(self, step: Step, limit: float) -> tuple[str, float, str]:
        """Run ``step`` in its own process group; (status, seconds, message)."""
        cmd = [sys.executable, __file__, str(self.out), "--step", step.name, "--work", str(self.work)]
        cmd += ["--cpu-dry-run"] if self.dry else []
        log = self.out / "steps.log"
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n==== {step.name} (limit {limit:.3g} s)\n")
            f.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                code = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the step and every process it started
                proc.wait()
                return "timeout", time.perf_counter() - t0, f"stopped at its {limit:.3g} s limit"
        seconds = time.perf_counter() - t0
        if code != 0:
            return "error", seconds, f"exit {code}: " + steps.last_line(log.read_text(encoding="utf-8"))
        return "ok", seconds, ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"gpu_check: OUT {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = plan()
    if args.step:  # a child: one step, in this process
        ctx = steps.Context(out, Path(args.work), steps.DRY if args.cpu_dry_run else steps.GPU, args.cpu_dry_run,
                            args.step)
        next(s for s in todo if s.name == args.step).run(ctx)
        return 0
    if args.only:
        unknown = set(args.only) - {s.name for s in todo}
        if unknown:
            names = ", ".join(s.name for s in todo)
            raise SystemExit(f"--only: no step named {', '.join(sorted(unknown))} (steps: {names})")
        todo = [s for s in todo if s.name in args.only]
    if not args.keep_results:  # a new run: no check of an earlier one may satisfy this run's needs
        for name in ("results.jsonl", "steps.log", "summary.md"):
            (out / name).unlink(missing_ok=True)
    made_work = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="attrtag-gpu-check-")
    run = Run(args)
    try:
        for step in todo:
            print(f"gpu_check: {step.name}", flush=True)
            run.start(step)
            write_summary(out, dry=args.cpu_dry_run, budget=args.budget, started=args.started)
    finally:
        if made_work and not args.keep_work:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"gpu_check: done in {time.time() - args.started:.0f} s; {out / 'summary.md'}")
    return 0


def _limit(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    try:
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit {text}: expected STEP=SECONDS") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for results.jsonl, summary.md and steps.log")
    p.add_argument("--cpu-dry-run", action="store_true", help="small sizes on the CPU (what CI runs)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole run (default 450)")
    p.add_argument("--started", type=float, default=time.time(), help="when the run began (epoch seconds; default now)")
    p.add_argument("--only", type=lambda s: s.split(","), help="run only these steps (comma-separated)")
    p.add_argument("--limit", type=_limit, action="append", default=[], metavar="STEP=S",
                   help="override a step's limit (seconds)")
    p.add_argument("--work", help="scratch folder for images and models (default: a temporary one, removed)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    p.add_argument("--keep-results", action="store_true",
                   help="add to OUT/results.jsonl instead of starting it anew (gpu_check.sh: after its install line)")
    p.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
