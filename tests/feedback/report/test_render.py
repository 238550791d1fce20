"""The HTML report in headless Chromium: one file that needs nothing else, every image loads, no console error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from feedback.report.render import DATA_NAME, write_cycle_report
from store.settings import Workspace
from tests.feedback.report.chromium import Chromium, chromium_binary

Site = tuple[Workspace, dict[str, Any], Path]

# What the page says about itself once loaded: each <img>'s state, and the verdict as a reader sees it.
CHECK = """({
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
  verdict: document.querySelector('#verdict .title')?.textContent.trim() ?? null,
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  curves: document.querySelectorAll('#curves svg path').length,
  rollout: document.querySelector('#rollout')?.innerText ?? null,
})"""
SECTIONS = ["verdict", "classes", "curves", "confusion", "mistakes", "mining", "selection", "rollout", "lineage", "timing"]


@pytest.fixture(scope="module")
def browser() -> Chromium:
    binary = chromium_binary()
    if binary is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (README, 'Run the test suite')")
    with Chromium(binary) as chromium:
        yield chromium


def _images_in(data: Any) -> int:
    """Image paths the data names (each becomes one <img>)."""
    if isinstance(data, dict):
        return sum(_images_in(v) if k != "image" else int(bool(v)) for k, v in data.items())
    if isinstance(data, list):
        return sum(_images_in(v) for v in data)
    return 0


def _render_and_load(site: Site, browser: Chromium, screenshot: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ws, summary, cycle_dir = site
    html = write_cycle_report(ws, summary, cycle_dir)
    text = html.read_text()
    # Self-contained: every image inline, nothing fetched from anywhere.
    assert re.findall(r"<img [^>]*src=\"(?!data:image/)", text) == []
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<script" not in text
    page = browser.load(html.as_uri(), CHECK, screenshot=screenshot)
    assert page.errors == []
    data = json.loads((cycle_dir / DATA_NAME).read_text())
    return page.value, data


def test_a_real_cycle_report_loads_cleanly(later_stages: Site, browser: Chromium, tmp_path: Path) -> None:
    page, data = _render_and_load(later_stages, browser, tmp_path / "cycle.png")
    assert len(page["images"]) == _images_in(data) > 0
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
    assert page["verdict"] == data["verdict"]["title"]
    assert page["sections"] == SECTIONS
    assert data["rollout"]["rollout"]["model"] in page["rollout"] and "canary" in page["rollout"]
    assert (tmp_path / "cycle.png").stat().st_size > 0


def test_curves_and_mistakes_report_loads_cleanly(judged: Site, browser: Chromium, tmp_path: Path) -> None:
    page, data = _render_and_load(judged, browser, tmp_path / "judged.png")
    mistakes = data["mistakes"]
    assert len(page["images"]) == _images_in(data) == len(mistakes["false_positives"]) + len(
        mistakes["false_negatives"]) > 8  # the worst false positives (8) and the missed vests
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
    assert page["verdict"].startswith("Refused m-challenger")
    # One line per model per class that has holdout boxes and a detection on the curve.
    drawn = sum(bool(c[role]["points"]) for c in data["curves"]["classes"] for role in ("challenger", "champion"))
    assert page["curves"] == drawn > 0


def test_the_check_sees_a_broken_image_and_a_console_error(browser: Chromium, tmp_path: Path) -> None:
    """The browser check itself can fail: a page with both faults is caught on both counts."""
    page = tmp_path / "broken.html"
    page.write_text('<img src="data:image/png;base64,AAAA"><img src="missing.png">'
                    '<script>console.error("boom")</script>')
    report = browser.load(page.as_uri(), CHECK)
    assert [i["width"] for i in report.value["images"]] == [0, 0]
    assert any("boom" in e for e in report.errors) and any("missing.png" in e for e in report.errors)


def test_a_first_model_without_champion(judged: Site, browser: Chromium, tmp_path: Path) -> None:
    """No champion yet: promoted by rule, no deltas, one curve and one confusion matrix per class."""
    from feedback.training.gate import decide

    ws, summary, cycle_dir = judged
    retrain = summary["stages"][0]["result"]
    first = decide(retrain["gate"]["challenger_metrics"], None)
    gate = {**retrain["gate"], "champion": None, "champion_metrics": None, "promoted": first.promoted,
            "reasons": first.reasons}
    alone = {**summary, "stages": [{**summary["stages"][0], "result": {**retrain, "gate": gate}}]}
    page, data = _render_and_load((ws, alone, cycle_dir), browser, tmp_path / "first.png")
    assert page["verdict"] == "Promoted m-challenger" and data["verdict"]["detail"] == "the first champion"
    assert all(m["delta"] is None and m["champion"] is None and not m["has_champion"] for m in data["headline"])
    assert data["confusion"]["champion"] is None
    assert all(c["champion"] is None for c in data["curves"]["classes"])
    assert page["curves"] == sum(bool(c["challenger"]["points"]) for c in data["curves"]["classes"]) > 0
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
