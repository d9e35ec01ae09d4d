"""``OUT/summary.md`` of ``scripts/gpu_check.py``: the tables, made from ``OUT/results.jsonl`` alone."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

MARK = {"ok": "ok", "fail": "**FAIL**", "error": "**ERROR**", "timeout": "**TIMEOUT**", "skip": "skip",
        "not-run": "not run"}


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    cells = [[("" if c is None else str(c)).replace("|", "/") for c in row] for row in rows]
    rule = f"|{'|'.join('---' for _ in header)}|"
    return [f"| {' | '.join(header)} |", rule, *(f"| {' | '.join(r)} |" for r in cells)]


def read_results(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def tagging_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """Each tagging run beside the decode ceiling of its images with the same number of workers."""
    ceiling = {(r["images"], r["workers"]): r["images_per_s"] for r in results if r["check"].startswith("decode ")}
    rows = []
    for r in results:
        parts = r["check"].split()
        if parts[0] != "tag" or len(parts) != 4 or r.get("kind") == "step":
            continue
        _, images, device, precision = parts
        rate, steady = r.get("images_per_s"), r.get("steady_images_per_s")
        top = ceiling.get((images, r.get("workers")))
        pace = steady or rate
        share = f"{100 * pace / top:.0f}%" if pace and top else ""
        rows.append([images, device, precision, MARK.get(r["status"], r["status"]), f"{rate:.0f}" if rate else "",
                     f"{steady:.0f}" if steady else "", f"{top:.0f} ({r.get('workers')} workers)" if top else "",
                     share, r.get("provider", ""), r.get("gpu_mem_peak_mib", ""), r.get("message", "")])
    return rows


def write_summary(out: Path, *, dry: bool, budget: float, started: float) -> Path:
    """Rewrite ``out/summary.md`` (atomically) from the results so far."""
    results = read_results(out)
    env = next((r for r in results if r["check"] == "env"), {})
    lines = [f"# attrtag GPU check{' (CPU dry run)' if dry else ''}", "",
             f"{env.get('figure', 'environment not read')}; {time.time() - started:.0f} s of a {budget:.0f} s budget. "
             "Statuses: ok, FAIL (ran, wrong result), ERROR (the step crashed), TIMEOUT (stopped at its limit), "
             "skip (not possible here: the note says why), not run (an earlier check it needs did not pass, or no "
             "time left).", ""]
    versions = env.get("versions") or {}
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), ""]
    rows = tagging_rows(results)
    if rows:
        lines += ["## Tagging vs the decode ceiling", "",
                  "images/s of the tagging loop (model loading excluded), whole and in its second half (past the "
                  "start-up; 6 batches or more), beside the decode path alone with the same workers; share = second "
                  "half (else whole) / ceiling.", ""]
        lines += table(["images", "device", "precision", "status", "images/s", "2nd half", "decode ceiling",
                        "share", "runs on", "peak GPU MiB", "note"], rows) + [""]
    checks = [r for r in results if r.get("kind") != "step"]
    lines += ["## Checks", ""]
    lines += table(["check", "status", "result", "peak GPU MiB", "note"],
                   [[r["check"], MARK.get(r["status"], r["status"]), r.get("figure", ""), r.get("gpu_mem_peak_mib", ""),
                     r.get("message", "")] for r in checks]) + [""]
    lines += ["## Steps", ""]
    lines += table(["step", "status", "seconds", "limit", "note"],
                   [[r["check"], MARK.get(r["status"], r["status"]), r.get("seconds", ""), r.get("limit", ""),
                     r.get("message", "")] for r in results if r.get("kind") == "step"]) + [""]
    path, tmp = out / "summary.md", out / ".summary.md.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path
