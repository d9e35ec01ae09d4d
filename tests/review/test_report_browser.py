"""The report in a real browser: headless Chromium opens the file, the DOM and a screenshot are checked.

Needs Python's ``playwright`` (a test extra; it drives the system's browser and downloads none)
and a Chromium binary (Debian's ``chromium``, which ``.ci/run`` installs). Skips cleanly where
either is missing.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from attrtag.review.report import write_report
from attrtag.review.sources import load_tags
from attrtag.review.sureness import group_sureness
from tests.helpers import MARKS, MULTI_SCHEMA, SCHEMA
from tests.review.conftest import make_tags

# Flags that work as root in a container, with nothing reaching out to the network.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
PAGE = 60  # cards per page, as in the template


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'attrtag[test]' (playwright)")
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        # A fresh profile folder: nothing from another run, no first-run dialogs.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=exe, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def test_the_report_works_in_a_browser(browser: Any, tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 130, thresholds={"colour": 0.6, "shape": 0.5})
    out = write_report(load_tags(tags, root=tmp_path), tmp_path / "report.html", workers=1).path
    tagged = [r for r in recs if "error" not in r]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else errors.append("fetched " + r.url))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def cards() -> int:
        return page.locator("#cards .card").count()

    def matching() -> int:
        return int(page.inner_text("#count").split()[0])

    assert cards() == PAGE and matching() == len(recs)
    assert page.inner_text("#page-info") == f"page 1 of {-(-len(recs) // PAGE)}"
    # Least sure first: the first card is the record whose weakest group is weakest.
    least = min(tagged, key=lambda r: min(r[f"{g}_prob"] for g in SCHEMA.names))
    assert page.locator("#cards .card .path").first.inner_text() == least["path"]

    page.select_option("#f-status", "failed")
    assert cards() == matching() == 2
    assert page.locator("#failed tbody tr").count() == 2
    page.select_option("#f-status", "all")

    page.check("#f-uncertain")
    uncertain = [r for r in tagged if r["colour_prob"] < 0.6 or r["shape_prob"] < 0.5]
    assert 0 < matching() == len(uncertain) < len(recs)
    page.uncheck("#f-uncertain")

    page.select_option("#f-group", label="colour")
    page.select_option("#f-value", label="blue")
    assert matching() == sum(r["colour"] == "blue" for r in tagged)
    page.select_option("#f-class", label="sky")
    assert matching() == sum(r["colour"] == "blue" and r["class"] == "sky" for r in tagged)
    page.click("#f-reset")
    assert matching() == len(recs)
    page.click("#page-next")
    assert page.inner_text("#page-info").startswith("page 2 of")

    page.click("#page-prev")
    shot = page.screenshot(full_page=False)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float32)
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    assert page.locator("#cards img").first.evaluate("img => img.naturalWidth") == 128  # thumbnails decode
    assert errors == []
    if os.environ.get("ATTRTAG_SCREENSHOT"):  # how the README's picture can be remade
        Path(os.environ["ATTRTAG_SCREENSHOT"]).write_bytes(shot)


def test_multi_label_groups_in_a_browser(browser: Any, tmp_path: Path) -> None:
    tags, recs = make_tags(tmp_path, 130, multi=True, thresholds={"colour": 0.6})
    loaded = load_tags(tags, root=tmp_path)
    out = write_report(loaded, tmp_path / "report.html", thumbnails="link").path
    tagged = [r for r in recs if "error" not in r]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def matching() -> int:
        return int(page.inner_text("#count").split()[0])

    def first_path() -> str:
        return page.locator("#cards .card .path").first.inner_text()

    def first_page() -> list[str]:
        return page.locator("#cards .card .path").all_inner_texts()

    def every_page() -> list[str]:
        paths = first_page()
        while page.locator("#page-next").is_enabled():
            page.click("#page-next")
            paths += first_page()
        return paths

    # Least sure first counts every multi-label value, exactly as Label Studio's score does.
    order = [r["path"] for r in sorted(tagged, key=lambda r: loaded.least_sure(r)[1])]
    exclusive_only = [r["path"] for r in sorted(tagged, key=lambda r: min(r[f"{g}_prob"] for g in SCHEMA.names))]
    assert every_page()[: len(tagged)] == order != exclusive_only  # failed images last
    # Histogram: how many images have each value present, and how many none.
    bars = page.locator(".hist[data-group='marks'] .bar")
    shown = {bars.nth(i).locator(".v").inner_text(): int(bars.nth(i).locator(".n").inner_text())
             for i in range(bars.count())}
    want = {v: sum(v in r["marks"] for r in tagged) for v in MARKS}
    assert shown == {**want, "(none)": sum(not r["marks"] for r in tagged)}
    # Filter by any value present, or by none.
    page.select_option("#f-group", label="marks")
    for v in MARKS:
        page.select_option("#f-value", label=v)
        assert matching() == want[v]
    page.select_option("#f-value", label="(none present)")
    assert matching() == sum(not r["marks"] for r in tagged)
    page.select_option("#f-value", label="(any)")
    # Sorted by the chosen group: the image whose least sure mark is least sure comes first.
    group = MULTI_SCHEMA["marks"]
    assert first_page() == [r["path"] for r in sorted(tagged, key=lambda r: group_sureness(loaded.meta.layout, r, group))
                            ][:PAGE]
    page.locator(".hist[data-group='marks'] .bar", has_text="ring").click()
    assert matching() == want["ring"]
    # A card shows the values present with their probabilities.
    rec = next(r for r in tagged if r["path"] == first_path())
    row = page.locator("#cards .card").first.locator(".row.multi")
    text = ", ".join(f"{v} {rec['marks_probs'][v]:.2f}" for v in rec["marks"]) or "none"
    assert row.inner_text().split(None, 1) == ["marks", text]
    assert errors == []


def test_the_audit_page_shows_each_label_with_its_images_one_thumbnail(browser: Any, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from attrtag.auditing.labels import AuditLabel, GroupSummary
    from attrtag.auditing.output import summary_dict, write_audit
    from attrtag.schema import Schema
    from tests.helpers import run_cli

    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    schema = Schema.from_dict({"colour": ["red", "blue"], "band": ["top", "bottom"]})
    rows = ((0, "colour", "blue", "red", 0.9, 1), (1, "colour", "red", "blue", 0.8, 2), (0, "band", "top", "bottom", 0.7, 1))
    labels = [AuditLabel(path=str(paths[i]), line=i + 2, split="train", group=g, value=None, label=given,
                         suggested=other, score=s, p_label=1 - s, p_suggested=s, flagged=True, rank=r)
              for i, g, given, other, s, r in rows]
    audit = tmp_path / "audit.csv"
    write_audit(audit, labels, {"rows": "all", "manifest": "m.csv", "method": "both", "schema": schema.to_dict(),
                                "groups": summary_dict([GroupSummary("colour", "exclusive", 2, 2, 1.0),
                                                        GroupSummary("band", "exclusive", 1, 1, 1.0)])})
    out = tmp_path / "audit.html"
    code, _, err = run_cli(capsys, "report", audit, "--out", out, "--workers", "0", "--no-progress")
    assert code == 0, err
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("#cards .card img")
    cards = page.locator("#cards .card")
    assert cards.count() == 3 and page.locator("#cards .card .noimg").count() == 0 and errors == []
    srcs = [cards.nth(i).locator("img").get_attribute("src") for i in range(3)]
    shown = [cards.nth(i).locator(".path").inner_text() for i in range(3)]
    assert all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert len(set(srcs)) == 2 and len(set(shown)) == 2  # image 0's two labels show its one thumbnail
    page.close()
