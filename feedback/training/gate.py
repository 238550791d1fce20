"""The promotion gate: a challenger replaces the champion only if it truly wins on real images.

Rule (DESIGN decision 4): mAP@0.5:0.95 on the real holdout improves by at least `margin`, and
no class's AP@0.5 drops by more than `tolerance` (a class missing from the challenger's results
counts as AP 0). Pure, so every verdict is easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MARGIN = 0.005
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    margin: float = DEFAULT_MARGIN
    tolerance: float = DEFAULT_TOLERANCE


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    margin: float = DEFAULT_MARGIN,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GateDecision:
    """Compare two evaluation results (the JSON `edgeloop eval` writes) on the same holdout."""
    if champion is None:
        return GateDecision(True, ["no champion yet: the first model is promoted"], margin, tolerance)
    reasons: list[str] = []
    gain = challenger["map50_95"] - champion["map50_95"]
    wins = gain >= margin - 1e-12
    reasons.append(
        f"mAP@0.5:0.95 {challenger['map50_95']:.4f} vs {champion['map50_95']:.4f} ({gain:+.4f}; "
        f"needs >= {margin:+.4f}): {'pass' if wins else 'fail'}"
    )
    regressions = []
    for name, theirs in champion["per_class"].items():
        # A class without holdout instances has no AP (null); it can't regress.
        if theirs.get("map50") is None:
            continue
        # Same holdout, so the challenger has instances too: no AP for them means it found none.
        ours = (challenger["per_class"].get(name) or {}).get("map50")
        drop = theirs["map50"] - (ours or 0.0)
        if drop > tolerance + 1e-12:
            shown = f"{ours:.4f}" if ours is not None else "missing (AP 0)"
            regressions.append(f"{name} AP@0.5 {shown} vs {theirs['map50']:.4f} (-{drop:.4f})")
    if regressions:
        reasons.append(f"classes regressing past the {tolerance:.3f} tolerance: " + "; ".join(regressions))
    else:
        reasons.append(f"no class's AP@0.5 drops by more than {tolerance:.3f}")
    return GateDecision(wins and not regressions, reasons, margin, tolerance)
