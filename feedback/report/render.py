"""The cycle report as one self-contained HTML file (images inlined as data URIs, charts drawn as inline SVG),
written with the JSON of its data; `write_cycle_report` is what the cycle flow calls last.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from feedback.report.data import cycle_report_data
from store.settings import Workspace

HTML_NAME = "report.html"
DATA_NAME = "report_data.json"  # report.json is the cycle's own summary
_MEDIA = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def write_cycle_report(ws: Workspace, summary: Mapping[str, Any], cycle_dir: Path | str) -> Path:
    """Gather the data, write `<cycle_dir>/report_data.json` and `<cycle_dir>/report.html`; returns the HTML's path."""
    cycle_dir = Path(cycle_dir)
    data = cycle_report_data(ws, summary, cycle_dir)
    (cycle_dir / DATA_NAME).write_text(json.dumps(data, indent=2, default=str) + "\n")
    html = cycle_dir / HTML_NAME
    html.write_text(render_html(data, cycle_dir))
    return html


def render_html(data: Mapping[str, Any], cycle_dir: Path) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("feedback.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, signed=signed, pct=pct, when=when, duration=duration, short=short, hashes=hashes,
                       datauri=lambda rel: datauri(cycle_dir, rel), heat=heat, path=svg_path)
    return env.get_template("cycle.html.j2").render(d=data)


def datauri(cycle_dir: Path, relative: str | None) -> str | None:
    """An image under the cycle folder as a data URI (None when there is none), so the HTML stands alone."""
    if not relative:
        return None
    path = cycle_dir / relative
    media = _MEDIA.get(path.suffix.lower())
    if media is None or not path.is_file():
        return None
    return f"data:{media};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if round(value, digits) == 0:
        return f"±{0:.{digits}f}"
    return f"{value:+.{digits}f}".replace("-", "−")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def when(value: datetime | str | None) -> str:
    if value is None:
        return "–"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def short(identifier: str | None, keep: int = 10) -> str:
    """Content hashes cut to their first characters (the full value is in the JSON and the title text)."""
    if not identifier:
        return "–"
    return identifier if len(identifier) <= keep + 2 else identifier[:keep] + "…"


_HASH = re.compile(r"\b([0-9a-f]{10})[0-9a-f]{22,}\b")


def hashes(text: str, keep: int = 10) -> str:
    """Free text with every content hash in it cut to its first characters ('real:3fa9c2d4e1…/2'); the element's
    title keeps the whole text."""
    return _HASH.sub(lambda m: m.group(1)[:keep] + "…", text)


def heat(count: int, column_total: int) -> str:
    """A cell's background: blue by its share of the true class (the column), so rare classes show too."""
    share = count / column_total if column_total else 0.0
    return f"background: rgba(37, 99, 235, {0.08 + 0.8 * share:.2f}); color: {'#fff' if share > 0.55 else '#111'}"


def svg_path(points: Sequence[Sequence[float]] | None, width: float, height: float) -> str:
    """An SVG path's `d` through points in [0, 1]² (y up) on a width × height plot."""
    if not points:
        return ""
    return "M" + " L".join(f"{x * width:.1f},{(1 - y) * height:.1f}" for x, y in points)
