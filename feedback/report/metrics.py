"""The report's verdict and metrics: the gate's decision in words, the headline numbers and each class against the
champion, precision-recall curves and confusion matrices, all from the gate's evaluation reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HEADLINE = (("map50_95", "mAP@0.5:0.95"), ("map50", "mAP@0.5"), ("precision", "precision"), ("recall", "recall"))


def verdict(stages: Mapping[str, Any], gate: Mapping[str, Any] | None) -> dict[str, Any]:
    retrain = stages.get("retrain")
    if retrain is None:
        return {"state": "none", "title": "No retraining in this cycle", "detail": "the retrain stage did not run",
                "reasons": []}
    if gate is None:
        why = (retrain.get("result") or {}).get("skipped") or "no gate verdict was recorded"
        return {"state": "skipped", "title": "No new model this cycle", "detail": why, "reasons": []}
    challenger, champion = gate["challenger"], gate.get("champion")
    if gate["promoted"]:
        title = f"Promoted {challenger}"
        detail = f"replaces {champion} as champion" if champion else "the first champion"
    else:
        title = f"Refused {challenger}"
        detail = f"{champion} stays champion" if champion else "no champion"
    return {"state": "promoted" if gate["promoted"] else "refused", "title": title, "detail": detail,
            "reasons": list(gate.get("reasons") or []), "margin": gate.get("margin"),
            "tolerance": gate.get("tolerance"),
            "dataset_version": gate.get("dataset_version"),
            "holdout_images": (gate.get("challenger_metrics") or {}).get("images"),
            "holdout_instances": (gate.get("challenger_metrics") or {}).get("instances")}


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


def _pair(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    new, old = challenger.get(key), (champion or {}).get(key)
    return {"challenger": new, "champion": old, "delta": _delta(new, old)}


def headline(gate: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if gate is None:
        return []
    new, old = gate["challenger_metrics"], gate.get("champion_metrics")
    return [{"key": key, "label": label, "has_champion": old is not None, **_pair(new, old, key)}
            for key, label in HEADLINE]


def per_class(gate: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if gate is None:
        return []
    new, old = gate["challenger_metrics"]["per_class"], (gate.get("champion_metrics") or {}).get("per_class") or {}
    tolerance = gate.get("tolerance") or 0.0
    rows = []
    for name, ours in new.items():
        theirs = old.get(name)
        ap50 = _pair(ours, theirs, "map50")
        # The gate's own rule: a class the champion had AP for, dropping past the tolerance.
        regressed = (theirs or {}).get("map50") is not None and \
            (theirs["map50"] - (ours.get("map50") or 0.0)) > tolerance + 1e-12
        rows.append({"class": name, "instances": ours.get("instances"), "ap50": ap50,
                     "ap50_95": _pair(ours, theirs, "map50_95"), "precision": _pair(ours, theirs, "precision"),
                     "recall": _pair(ours, theirs, "recall"), "false_positives": ours.get("false_positives"),
                     "false_negatives": ours.get("false_negatives"), "regressed": regressed,
                     # The confidence its precision and recall are at: its own, or the one global threshold.
                     "threshold": {"challenger": ours.get("threshold", 0.25),
                                   "champion": (theirs or {}).get("threshold", 0.25) if theirs else None}})
    return rows


def _curve(precision: Sequence[float] | None, recall: Sequence[float]) -> list[list[float]] | None:
    """The points up to the highest recall reached (COCO pads the rest with 0); None: the class has no truth."""
    if precision is None:
        return None
    reached = [i for i, p in enumerate(precision) if p > 0]
    return [[recall[i], precision[i]] for i in range(reached[-1] + 1)] if reached else []


def curves(evaluation: Path, gate: Mapping[str, Any] | None) -> dict[str, Any]:
    if gate is None:
        return {"status": "no model was evaluated in this cycle", "classes": []}
    found = {}
    for role in ("challenger", "champion"):
        path = evaluation / role / "pr_curves.json"
        if gate.get(f"{role}_metrics") and path.is_file():
            found[role] = json.loads(path.read_text())
    if "challenger" not in found:
        return {"status": f"no precision-recall points were written ({evaluation / 'challenger' / 'pr_curves.json'})",
                "classes": []}
    classes = []
    for name in gate["challenger_metrics"]["per_class"]:
        entry: dict[str, Any] = {"class": name, "challenger": None, "champion": None}
        for role, curves in found.items():
            per_class = gate[f"{role}_metrics"]["per_class"].get(name) or {}
            entry[role] = {"points": _curve(curves["precision"].get(name), curves["recall"]),
                           "ap50": per_class.get("map50"),
                           # the deployed operating point (conf 0.25) on the curve
                           "operating_point": [per_class.get("recall"), per_class.get("precision")]}
        classes.append(entry)
    return {"status": None, "iou": found["challenger"].get("iou", 0.5), "classes": classes}


def confusion(gate: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    out: dict[str, Any] = {"challenger": None, "champion": None}
    for role in ("challenger", "champion"):
        matrix = (gate.get(f"{role}_metrics") or {}).get("confusion_matrix")
        if matrix:
            out[role] = {"labels": matrix["labels"], "matrix": matrix["matrix"]}
            out.update(confidence=matrix.get("confidence"), iou=matrix.get("iou"))
    return out if out["challenger"] else None

