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


# Where the rare class's headline sits, and every element whose text spills out of its box. A box that clips its
# text on purpose (overflow hidden) must say so with an ellipsis and carry the whole text as its title; a
# scrolling box is not an overflow.
LAYOUT = """(() => {
  const main = document.querySelector('main');
  const first = main.firstElementChild;
  const verdict = document.getElementById('verdict');
  const spills = [];
  for (const e of [document.documentElement, ...document.querySelectorAll('body, body *')]) {
    if (!(e instanceof HTMLElement) || e.clientWidth === 0 || e.scrollWidth <= e.clientWidth + 1) continue;
    const style = getComputedStyle(e);
    if (style.overflowX === 'auto' || style.overflowX === 'scroll') continue;
    if (style.overflowX !== 'visible' && style.textOverflow === 'ellipsis' && e.title) continue;
    spills.push(`${e.tagName.toLowerCase()}.${e.className} ${e.scrollWidth}>${e.clientWidth}: ` +
                e.textContent.trim().slice(0, 60));
  }
  const scores = Array.from(document.querySelectorAll('#selection table tr')).slice(1)
    .map(r => parseFloat(r.cells[2].textContent));
  return {first: first.id, top: first.getBoundingClientRect().top + window.scrollY, text: first.innerText,
          first_in_page: !(first.compareDocumentPosition(verdict) & Node.DOCUMENT_POSITION_PRECEDING),
          h1_after: !!(first.compareDocumentPosition(document.querySelector('h1')) & Node.DOCUMENT_POSITION_FOLLOWING),
          spills, scores, rollout: document.querySelector('#rollout')?.innerText ?? ''};
})()"""


def test_the_report_opens_with_the_rare_class_and_no_text_spills(later_stages: Site, browser: Chromium,
                                                                  tmp_path: Path) -> None:
    ws, summary, cycle_dir = later_stages
    watched = {**summary, "watch_classes": ["no_helmet"]}
    html = write_cycle_report(ws, watched, cycle_dir)
    data = json.loads((cycle_dir / DATA_NAME).read_text())
    page = browser.load(html.as_uri(), LAYOUT, screenshot=tmp_path / "layout.png")
    assert page.errors == []
    layout = page.value
    # The headline is the page's first block, at its very top, before the title line and the verdict.
    assert layout["first"] == "rare" and layout["top"] < 40 and layout["first_in_page"] and layout["h1_after"]
    story = data["rare"][0]
    assert layout["text"].split()[0] == story["class"] == "no_helmet"
    text = layout["text"].lower()  # innerText as shown: the card labels are upper-cased by the style
    assert "recall where the device decides" in text and "review bought" in text
    assert f"{story['metrics']['recall']['challenger']:.2f}" in text
    assert "cost model" in text and "papadopoulos" in text
    # Nothing overflows its box, at the width the report is read at.
    assert layout["spills"] == []
    # Picks by score, highest first.
    assert layout["scores"] == sorted(layout["scores"], reverse=True) and len(layout["scores"]) > 1
    # A 10% canary no device has reported on yet is waiting, not unhealthy.
    assert data["rollout"]["judgment"]["state"] == "waiting"
    assert "waiting for heartbeats" in layout["rollout"] and "not healthy" not in layout["rollout"]
    assert "10.0% of the fleet; the rest run" in layout["rollout"]


def test_the_layout_check_sees_a_spilling_caption_and_accepts_an_ellipsis(browser: Chromium, tmp_path: Path) -> None:
    """The overflow check itself can fail: an unbreakable caption in a narrow box is caught; the same text clipped
    with an ellipsis and a title is not."""
    long = "real:" + "3fa9c2d4e1" * 7 + "/2"
    page = tmp_path / "spill.html"
    page.write_text(f'<main><div id="rare">x</div><h1>t</h1><section id="verdict"></section>'
                    f'<div class="tile" style="width:120px">{long}</div>'
                    f'<div style="width:120px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap" '
                    f'title="{long}">{long}</div></main>')
    spills = browser.load(page.as_uri(), LAYOUT).value["spills"]
    assert len(spills) == 1 and spills[0].startswith("div.tile")


def test_a_whole_fleet_canary_is_not_said_to_leave_a_rest(later_stages: Site) -> None:
    """At 100% the canary is every device: the rollout line says so instead of naming 'the rest'."""
    from feedback.report.data import cycle_report_data
    from feedback.report.render import render_html

    ws, summary, cycle_dir = later_stages
    data = cycle_report_data(ws, summary, cycle_dir)
    data["rollout"]["rollout"]["canary_pct"] = 100.0
    html = render_html(data, cycle_dir)
    section = html[html.index('<section id="rollout">'):html.index('<section id="lineage">')]
    rollout = " ".join(re.sub(r"<[^>]+>", "", section).split())
    assert "on every device (a 100% canary)" in rollout and "the rest run" not in rollout
