"""The promotion gate: a challenger replaces the champion only if it truly wins on real images.

Rule (DESIGN decision 4): mAP@0.5:0.95 on the real holdout improves by at least `margin`, no
class's AP@0.5 drops by more than `tolerance` (a class missing from the challenger's results
counts as AP 0), and no watched class's recall at its own operating point (each model at its
own thresholds, DESIGN decision 9) drops by more than `tolerance` either: an alert class the
site sees less often is a regression whatever the mAP. Pure, so every verdict is easy to test.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    watched: Sequence[str] = (),
) -> GateDecision:
    """Compare two evaluation results (the JSON `edgeloop eval` writes) on the same holdout; `watched` names
    the classes whose recall at the operating point may not fall (the rare and watched ones)."""
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
    unseen = []
    for name in watched:
        theirs, ours = (champion["per_class"].get(name) or {}), (challenger["per_class"].get(name) or {})
        if theirs.get("recall") is None:  # no holdout instances: nothing to see or miss
            continue
        drop = theirs["recall"] - (ours.get("recall") or 0.0)
        line = (f"{name} recall {ours.get('recall') or 0.0:.3f} at {_at(ours)} vs {theirs['recall']:.3f} at "
                f"{_at(theirs)}")
        reasons.append(line + (" (falls)" if drop > tolerance + 1e-12 else ": pass"))
        if drop > tolerance + 1e-12:
            unseen.append(name)
    return GateDecision(wins and not regressions and not unseen, reasons, margin, tolerance)


def _at(per_class: dict[str, Any]) -> str:
    """Where a class's recall was measured: its own threshold, or the global one."""
    return f"conf {per_class.get('threshold', 0.25):.3g}"
