"""The cycle report's data: what one improvement cycle did and found, from its summary, the gate's evaluation
reports and the catalog, as one JSON-able dict; the crops it shows are written beside it and named by path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import duckdb
import numpy as np

from edge.protocol import utc_now
from feedback.evaluation.dataset import IMAGE_SUFFIXES, read_labels
from feedback.report.effort import review_effort
from feedback.report.rare import rare_story
from store.clusters import clusters_updated_between, latest_prompts
from store.review_history import oracle_answer_folders, review_verdicts_between
from store.settings import Workspace

if TYPE_CHECKING:
    from feedback.rollout.canary import Judgment

NOT_RUN = "not run in this cycle"
IMAGES = "report_images"  # under the cycle folder; image paths in the data are relative to that folder
HEADLINE = (("map50_95", "mAP@0.5:0.95"), ("map50", "mAP@0.5"), ("precision", "precision"), ("recall", "recall"))
WORST = 8  # false positives and negatives shown
MAX_PICKS = 12
MAX_CLUSTERS = 6
SAMPLES = 4  # kept and rejected synthetic images shown per cluster
_CROP = 160
_RED, _GREEN, _AMBER = (50, 50, 220), (60, 180, 60), (0, 170, 255)


def cycle_report_data(ws: Workspace, summary: Mapping[str, Any], cycle_dir: Path | str) -> dict[str, Any]:
    """Everything the report shows, in the order a reader wants it: the verdict first, timings last."""
    cycle_dir = Path(cycle_dir)
    images = _Images(ws, cycle_dir)
    stages = {s["name"]: s for s in summary.get("stages", [])}
    window = (_time(summary.get("started_at")) or utc_now(), _time(summary.get("finished_at")) or utc_now())
    retrain = stages.get("retrain") or {}
    gate = (retrain.get("result") or {}).get("gate")
    rollout = _rollout(ws, stages, window, gate)  # before ours: it opens connections of its own
    with ws.catalog.connect() as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        names = [n for (n,) in con.execute("SELECT name FROM classes ORDER BY id").fetchall()]
        reviewed = review_verdicts_between(con, window)
        verified = [label for label, _, status in reviewed if status == "verified"]
        effort = review_effort(con, window)
        pushed = [p["capture"] for p in ((stages.get("review push") or {}).get("result") or {}).get("picks") or []]
        data = {
            "rare": rare_story(con, tables, names, _watched(ws, summary), gate, window, verified, pushed,
                               sorted(oracle_answer_folders(con, verified))),
            "effort": effort.as_dict() if effort else None,
            "written_at": utc_now(),
            "cycle": summary.get("cycle"),
            "workspace": summary.get("workspace"),
            "started_at": summary.get("started_at"),
            "finished_at": summary.get("finished_at"),
            "verdict": _verdict(stages, gate),
            "headline": _headline(gate),
            "per_class": _per_class(gate),
            "curves": _curves(cycle_dir / "evaluation", gate),
            "confusion": _confusion(gate),
            "mistakes": _mistakes(cycle_dir / "evaluation" / "challenger", gate, images),
            "mining": _mining(con, tables, stages, window, names, images),
            "selection": _selection(con, stages, images),
            "rollout": rollout,
            "lineage": _lineage(con, retrain.get("result") or {}, gate),
            "stages": _stages(summary),
        }
    data["story"] = _story(stages, data)
    data["stages_s"] = round(sum(s["seconds"] or 0 for s in data["stages"]), 1)
    started, finished = _time(summary.get("started_at")), _time(summary.get("finished_at"))
    data["wall_s"] = round((finished - started).total_seconds(), 1) if started and finished else data["stages_s"]
    costs = [s["cost_usd"] for s in data["stages"] if s["cost_usd"] is not None]
    data["cost_usd"] = round(sum(costs), 4) if costs else None
    # People's time is the cost that matters (DESIGN decision 11): the review pull is where it was spent.
    for s in data["stages"]:
        s["people_s"] = effort.seconds if effort and s["name"] == "review pull" and s["status"] == "done" else None
    data["people_s"] = effort.seconds if effort else None
    return data


def _watched(ws: Workspace, summary: Mapping[str, Any]) -> list[str]:
    """The classes the cycle watched (its watch_classes) and the workspace's own, in that order."""
    return list(dict.fromkeys([*(summary.get("watch_classes") or []), *ws.settings.watch_classes]))


# --- verdict and metrics -------------------------------------------------------------------------------------


def _verdict(stages: Mapping[str, Any], gate: Mapping[str, Any] | None) -> dict[str, Any]:
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
            "reasons": list(gate.get("reasons") or []), "margin": gate.get("margin"), "tolerance": gate.get("tolerance"),
            "dataset_version": gate.get("dataset_version"),
            "holdout_images": (gate.get("challenger_metrics") or {}).get("images"),
            "holdout_instances": (gate.get("challenger_metrics") or {}).get("instances")}


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


def _pair(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    new, old = challenger.get(key), (champion or {}).get(key)
    return {"challenger": new, "champion": old, "delta": _delta(new, old)}


def _headline(gate: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if gate is None:
        return []
    new, old = gate["challenger_metrics"], gate.get("champion_metrics")
    return [{"key": key, "label": label, "has_champion": old is not None, **_pair(new, old, key)}
            for key, label in HEADLINE]


def _per_class(gate: Mapping[str, Any] | None) -> list[dict[str, Any]]:
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


def _curves(evaluation: Path, gate: Mapping[str, Any] | None) -> dict[str, Any]:
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


def _confusion(gate: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    out: dict[str, Any] = {"challenger": None, "champion": None}
    for role in ("challenger", "champion"):
        matrix = (gate.get(f"{role}_metrics") or {}).get("confusion_matrix")
        if matrix:
            out[role] = {"labels": matrix["labels"], "matrix": matrix["matrix"]}
            out.update(confidence=matrix.get("confidence"), iou=matrix.get("iou"))
    return out if out["challenger"] else None


# --- images --------------------------------------------------------------------------------------------------


class _Images:
    """Crops and thumbnails written under the cycle folder, named by their path relative to it."""

    def __init__(self, ws: Workspace, cycle_dir: Path) -> None:
        self.ws, self.cycle_dir, self.count = ws, cycle_dir, 0

    def blob(self, sha: str | None) -> np.ndarray | None:
        if not sha:
            return None
        try:
            data = self.ws.blobs.get(sha)
        except (FileNotFoundError, KeyError, OSError):
            return None
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def save(self, image: np.ndarray | None, stem: str) -> str | None:
        if image is None or not image.size:
            return None
        folder = self.cycle_dir / IMAGES
        folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        name = f"{self.count:03d}-{stem}.jpg"
        if not cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 88]):
            raise OSError(f"could not write {folder / name}")
        return f"{IMAGES}/{name}"


def crop(image: np.ndarray, box: Sequence[float], colour: tuple[int, int, int],
         context: Iterable[Sequence[float]] = (), side: int = _CROP) -> np.ndarray:
    """The box with half its size again around it (at least 16 px), scaled to `side`, outlined; nearby boxes thin."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = max(16.0, 0.5 * max(x2 - x1, y2 - y1))
    cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    cx2, cy2 = int(min(width, np.ceil(x2 + pad))), int(min(height, np.ceil(y2 + pad)))
    part = image[cy1:max(cy2, cy1 + 1), cx1:max(cx2, cx1 + 1)]
    scale = side / max(part.shape[:2])
    part = cv2.resize(part, (max(1, round(part.shape[1] * scale)), max(1, round(part.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def corners(b: Sequence[float]) -> tuple[tuple[int, int], tuple[int, int]]:
        return ((round((b[0] - cx1) * scale), round((b[1] - cy1) * scale)),
                (round((b[2] - cx1) * scale), round((b[3] - cy1) * scale)))

    for other in context:
        cv2.rectangle(part, *corners(other), _GREEN, 1)
    cv2.rectangle(part, *corners((x1, y1, x2, y2)), colour, 2)
    return part


def thumbnail(image: np.ndarray, boxes: Iterable[Sequence[float]] = (), side: int = 240) -> np.ndarray:
    scale = min(1.0, side / max(image.shape[:2]))
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    for b in boxes:
        cv2.rectangle(out, (round(b[0] * scale), round(b[1] * scale)), (round(b[2] * scale), round(b[3] * scale)),
                      _AMBER, 1)
    return out


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (path := folder / f"{stem}{suffix}").is_file():
            return path
    return None


def _mistakes(evaluation: Path, gate: Mapping[str, Any] | None, images: _Images) -> dict[str, Any]:
    """The challenger's worst false positives (most confident) and negatives (least seen), as crops."""
    path = evaluation / "mistakes.json"
    if gate is None or not path.is_file():
        return {"status": "no evaluation report in this cycle", "false_positives": [], "false_negatives": []}
    mistakes = json.loads(path.read_text())
    data = Path(gate["challenger_metrics"].get("data") or "")
    out: dict[str, Any] = {"status": None, "definition": mistakes.get("definition"), "model": gate["challenger"]}
    for kind, colour in (("false_positives", _RED), ("false_negatives", _GREEN)):
        rows = []
        for m in mistakes.get(kind, [])[:WORST]:
            image_path = _find_image(data / "images", m["image_id"])
            frame = cv2.imread(str(image_path)) if image_path else None
            context: list[list[float]] = []
            if frame is not None and kind == "false_positives":
                # The ground truth nearby shows what the false alarm was confused with.
                xyxy, _ = read_labels(data / "labels" / f"{m['image_id']}.txt", frame.shape[1], frame.shape[0])
                context = xyxy.tolist()
            rows.append({
                "image": images.save(crop(frame, m["box"], colour, context), kind[:2]) if frame is not None else None,
                "image_id": m["image_id"], "class": m["class"],
                "score": m.get("score") if kind == "false_positives" else m.get("best_score"),
                "against": (f"IoU {m['best_iou']:.2f} with a {m['best_iou_class_name']}"
                            if m.get("best_iou_class_name") else "on background") if kind == "false_positives" else None,
            })
        out[kind] = rows
    return out


# --- mining and synthesis ------------------------------------------------------------------------------------


def _mining(con: duckdb.DuckDBPyConnection, tables: set[str], stages: Mapping[str, Any],
            window: tuple[datetime, datetime], names: Sequence[str], images: _Images) -> dict[str, Any]:
    """Failure clusters touched in this cycle, each with medoid crops, prompts and the synthetic images made for it."""
    mined = {"failure_clusters", "prompts"} <= tables
    synthesized = {"synthesis_runs", "synthesis_outcomes"} <= tables
    out: dict[str, Any] = {"mine": _stage_note(stages, "mine") if mined else NOT_RUN,
                           "synthesize": _stage_note(stages, "synthesize") if synthesized else NOT_RUN,
                           "clusters": [], "runs_without_cluster": [], "total": 0}
    runs = _synthesis_runs(con, window, names, images) if synthesized else []
    if mined:
        out["total"] = clusters_updated_between(con, window)
        rows = con.execute(
            "SELECT id, class_id, kind, size, description, medoids, model_version FROM failure_clusters "
            "WHERE NOT noise AND updated_at BETWEEN ? AND ? ORDER BY size DESC, id LIMIT ?",
            [*window, MAX_CLUSTERS]).fetchall()
        shown = {r[0] for r in rows}
        # A cluster synthesised for in this cycle is shown even when mining did not touch it.
        extra = [r["cluster_id"] for r in runs if r["cluster_id"] and r["cluster_id"] not in shown]
        if extra:
            rows += con.execute(
                "SELECT id, class_id, kind, size, description, medoids, model_version FROM failure_clusters "
                "WHERE list_contains(?, id) ORDER BY size DESC, id", [extra]).fetchall()
        for cid, class_id, kind, size, description, medoids, model_version in rows:
            description = json.loads(description)
            out["clusters"].append({
                "id": cid, "class": _name(names, class_id), "kind": kind, "size": size, "model": model_version,
                "traits": _traits(description),
                "medoids": _medoid_crops(con, json.loads(medoids)[:3], images),
                "prompts": latest_prompts(con, cid),
                "runs": [r for r in runs if r["cluster_id"] == cid],
            })
    out["runs_without_cluster"] = [r for r in runs if not r["cluster_id"] or not mined]
    return out


def _traits(description: Mapping[str, Any]) -> list[str]:
    """What most members share, in words: 'lighting dark 80%', 'confused with no_helmet 60%'."""
    words = [f"{k} {v['value']} {v['share']:.0%}" for k, v in (description.get("bins") or {}).items()
             if isinstance(v, Mapping) and v.get("fixed") and v.get("value") is not None]
    words += [f"colour {c['name']} {c['share']:.0%}" for c in description.get("colours") or []]
    for key, value in description.items():
        if key in {"bins", "medians", "colours", "class", "tags", "neighbour"} or not isinstance(value, Mapping):
            continue
        if value.get("fixed") and value.get("value") is not None:
            words.append(f"{key.replace('_', ' ')} {value['value']} {value['share']:.0%}")
    neighbour = description.get("neighbour")
    if isinstance(neighbour, Mapping) and neighbour.get("class") is not None:
        words.append(f"looks like {neighbour['class']}")
    return words


def _medoid_crops(con: duckdb.DuckDBPyConnection, failure_ids: Sequence[str], images: _Images) -> list[dict]:
    rows = con.execute(
        "SELECT f.id, c.sha256, f.x1, f.y1, f.x2, f.y2, f.kind FROM failures f JOIN captures c ON c.id = f.capture_id "
        "WHERE list_contains(?, f.id)", [list(failure_ids)]).fetchall()
    by_id = {r[0]: r for r in rows}
    out = []
    for fid in failure_ids:
        if fid not in by_id:
            continue
        _, sha, *box, kind = by_id[fid]
        frame = images.blob(sha)
        out.append({"failure": fid, "kind": kind,
                    "image": images.save(crop(frame, box, _RED), "medoid") if frame is not None else None})
    return out


def _synthesis_runs(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime], names: Sequence[str],
                    images: _Images) -> list[dict[str, Any]]:
    runs = []
    for rid, generator, cid, target, kept, rejected, cost in con.execute(
            "SELECT id, generator, cluster_id, target_class, n_kept, n_rejected, cost_usd FROM synthesis_runs "
            "WHERE started_at BETWEEN ? AND ? ORDER BY started_at", list(window)).fetchall():
        reasons = dict(con.execute(
            "SELECT reason, count(*) FROM synthesis_outcomes WHERE run_id = ? AND NOT kept GROUP BY reason "
            "ORDER BY count(*) DESC", [rid]).fetchall())
        samples: dict[str, list[dict[str, Any]]] = {"kept_samples": [], "rejected_samples": []}
        for is_kept in (True, False):
            for idx, image_sha, reason, detail, thumb_sha, lineage in con.execute(
                    "SELECT o.idx, o.image_sha256, o.reason, o.detail, o.thumb_sha256, "
                    "coalesce(i.lineage, o.lineage) FROM synthesis_outcomes o LEFT JOIN images i "
                    "ON i.sha256 = o.image_sha256 WHERE o.run_id = ? AND o.kept = ? ORDER BY o.idx LIMIT ?",
                    [rid, is_kept, SAMPLES]).fetchall():
                lineage = json.loads(lineage) if lineage else {}
                frame = images.blob(image_sha if is_kept else thumb_sha)
                if frame is not None:
                    frame = _with_new_boxes(con, frame, image_sha, lineage.get("new_boxes")) if is_kept \
                        else thumbnail(frame, side=200)
                filters = filter_scores(lineage.get("filters") or {})
                samples["kept_samples" if is_kept else "rejected_samples"].append({
                    "index": idx, "reason": reason, "detail": detail,
                    "image": images.save(frame, "synthetic") if frame is not None else None,
                    "filters": filters,
                    "scores": [[label, _format(filters[key])] for key, label in SCORE_LABELS if key in filters],
                    "prompt": lineage.get("prompt") or lineage.get("edit_instruction")})
        runs.append({"id": rid, "generator": generator, "cluster_id": cid, "target": _name(names, target),
                     "kept": kept, "rejected": rejected, "cost_usd": cost, "reasons": reasons, **samples})
    return runs


def _with_new_boxes(con: duckdb.DuckDBPyConnection, image: np.ndarray, sha: str, new: Sequence[int] | None,
                    ) -> np.ndarray:
    """A kept image's thumbnail with its labelled boxes: the generated ones green, the carried-over ones grey."""
    boxes = con.execute(
        "SELECT b.x1, b.y1, b.x2, b.y2 FROM labels l JOIN label_boxes b ON b.label_id = l.id "
        "WHERE l.image_sha256 = ? AND l.id = (SELECT id FROM labels WHERE image_sha256 = ? "
        "ORDER BY created_at DESC LIMIT 1) ORDER BY b.idx", [sha, sha]).fetchall()
    fresh = set(range(len(boxes))) if new is None else {int(i) for i in new}
    out = thumbnail(image, side=200)
    scale = out.shape[1] / image.shape[1]
    for i, b in enumerate(boxes):
        corners = (round(b[0] * scale), round(b[1] * scale)), (round(b[2] * scale), round(b[3] * scale))
        cv2.rectangle(out, *corners, _GREEN if i in fresh else (170, 170, 170), 2 if i in fresh else 1)
    return out


# The filter scores a reader weighs a synthetic image by, in this order; the rest stay in the JSON.
SCORE_LABELS = (("champion", "champion"), ("max_cosine", "cosine to nearest real"),
                ("phash_min_hamming", "hash bits from nearest"), ("cluster_cosine", "cosine to cluster"),
                ("cluster_threshold", "cluster needs"), ("n_new", "new boxes"))


def filter_scores(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters' scalar scores, the champion's verdicts as words; references to other images are left out."""
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if key.endswith("_nearest") or key == "phash":
            continue
        if key == "champion" and isinstance(value, list):
            out[key] = ", ".join(str(v.get("verdict")) for v in value if isinstance(v, Mapping))
        elif isinstance(value, bool | str | int | float):
            out[key] = value
    return out


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --- selection, rollout, lineage, stages ---------------------------------------------------------------------


def _selection(con: duckdb.DuckDBPyConnection, stages: Mapping[str, Any], images: _Images) -> dict[str, Any]:
    """What review push picked in this cycle, each pick's score parts (as recorded with its review task) and
    what the review then found on it."""
    push = stages.get("review push")
    if push is None or push["status"] != "done":
        return {"status": (push or {}).get("result", {}).get("skipped") or NOT_RUN, "picks": []}
    from feedback.review.selection import WEIGHTS

    result = push["result"]
    order = [p["capture"] for p in result.get("picks") or []]
    tasks = {r[0]: r[1:] for r in con.execute(
        "SELECT t.capture_id, t.score, t.score_parts, t.status, c.sha256 FROM review_tasks t "
        "JOIN captures c ON c.id = t.capture_id WHERE list_contains(?, t.capture_id)", [order]).fetchall()}
    found = {}
    for capture, kind, n in con.execute(
            "SELECT capture_id, kind, count(*) FROM failures WHERE list_contains(?, capture_id) GROUP BY ALL",
            [order]).fetchall():
        found.setdefault(capture, {})[kind] = n
    shown = _top_by_score(result.get("picks") or [], MAX_PICKS)
    picks, part_names = [], list(WEIGHTS)
    for rank, capture in enumerate(order, 1):
        if capture not in tasks or capture not in shown:
            continue
        score, parts, status, sha = tasks[capture]
        parts = json.loads(parts) if parts else {}
        part_names += [k for k in parts if k not in part_names]
        boxes = [r for r in con.execute("SELECT x1, y1, x2, y2 FROM detections WHERE capture_id = ?",
                                        [capture]).fetchall()]
        frame = images.blob(sha)
        picks.append({"rank": rank, "capture": capture, "score": score, "parts": parts, "status": status,
                      "why": _why(parts, WEIGHTS), "failures": found.get(capture, {}),
                      "image": images.save(thumbnail(frame, boxes, side=180), "pick") if frame is not None else None})
    everywhere_zero = _zero_parts(result.get("picks") or [])
    return {"status": None, "strategy": result.get("strategy"), "pushed": result.get("pushed"),
            "already_pushed": result.get("already_pushed"), "embedder": result.get("embedder"),
            "total_picks": len(order), "weights": dict(WEIGHTS),
            # A part that is 0 on every pick chose nothing: named once, not shown as a column of zeros.
            "parts": [p for p in part_names
                      if any(p in pick["parts"] for pick in picks) and p not in everywhere_zero],
            "zero_parts": [p for p in part_names if p in everywhere_zero],
            "picks": picks}  # in pick order (rank); the table shows them by score


def _top_by_score(picks: Sequence[Mapping[str, Any]], keep: int) -> set[str]:
    """The `keep` picks of highest score (earlier picks first on ties): the ones the table shows."""
    ranked = sorted(enumerate(picks), key=lambda ip: (-(ip[1].get("score") or 0.0), ip[0]))
    return {p["capture"] for _, p in ranked[:keep]}


def _zero_parts(picks: Sequence[Mapping[str, Any]]) -> set[str]:
    """Score parts recorded on every pick and 0 on each."""
    recorded = [set(p.get("parts") or {}) for p in picks]
    common = set.intersection(*recorded) if recorded else set()
    return {k for k in common if all(not (p["parts"].get(k) or 0.0) for p in picks)}


def _why(parts: Mapping[str, float], weights: Mapping[str, float]) -> str:
    """The parts that made most of the priority (weight x value), an operator's flag first; novelty has a column."""
    contributions = sorted(((weights[k] * v, k) for k, v in parts.items() if k in weights and v > 0), reverse=True)
    total = sum(c for c, _ in contributions)
    words = [f"{k.replace('_', ' ')} {c / total:.0%}" for c, k in contributions[:2]] if total > 0 else []
    if parts.get("operator"):
        words.insert(0, "flagged by an operator")
    return ", ".join(words) or ("no priority: novelty only" if "diversity" in parts else "random sample")


def _rollout(ws: Workspace, stages: Mapping[str, Any], window: tuple[datetime, datetime],
             gate: Mapping[str, Any] | None) -> dict[str, Any]:
    """What publish did in this cycle, and the fleet as it stands: the latest rollout, its canary judgment,
    each device's desired and running model."""
    from feedback.rollout.canary import device_table, judge
    from feedback.rollout.deployments import latest_rollout

    with ws.catalog.connect() as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"rollouts", "rollout_events", "artifacts"} <= tables:
            return {"status": NOT_RUN, "publish": NOT_RUN}
        models = [m for m in ((gate or {}).get("challenger"), (stages.get("publish") or {}).get("result", {})
                              .get("model")) if m]
        artifacts = con.execute("SELECT model_id, onnx_bytes, parity, published_at FROM artifacts "
                                "WHERE list_contains(?, model_id) OR published_at BETWEEN ? AND ? "
                                "ORDER BY published_at DESC", [models, *window]).fetchall()
        rollout = latest_rollout(con)
        events = con.execute("SELECT rollout_id, happened_at, action, canary_pct, forced FROM rollout_events "
                             "WHERE happened_at BETWEEN ? AND ? ORDER BY happened_at", list(window)).fetchall()
    if rollout is None and not artifacts:
        return {"status": "nothing published yet", "publish": _stage_note(stages, "publish")}
    judgment = judge(ws, rollout) if rollout is not None and rollout.state == "canary" else None
    return {
        "status": None, "publish": _stage_note(stages, "publish"),
        "artifacts": [{"model": a[0], "onnx_bytes": a[1], "parity": json.loads(a[2]), "published_at": a[3]}
                      for a in artifacts],
        "rollout": None if rollout is None else {
            "id": rollout.id, "model": rollout.model_id, "baseline": rollout.baseline_model_id,
            "canary_pct": rollout.canary_pct, "state": rollout.state, "started_at": rollout.started_at,
            "updated_at": rollout.updated_at},
        "judgment": None if judgment is None else {"healthy": judgment.healthy, "reasons": judgment.reasons,
                                                   "state": _judgment_state(judgment)},
        "events": [dict(zip(("rollout", "at", "action", "canary_pct", "forced"), e)) for e in events],
        "devices": device_table(ws)[:20],
    }


def _judgment_state(judgment: Judgment) -> str:
    """healthy; waiting (too few heartbeats from the canary's devices to judge, and none refused it); unhealthy."""
    from feedback.rollout.canary import CanaryPolicy

    if judgment.healthy:
        return "healthy"
    heartbeats = judgment.candidate_stats.heartbeats if judgment.candidate_stats else 0
    return "waiting" if heartbeats < CanaryPolicy().min_heartbeats and not judgment.refusals else "unhealthy"


def _lineage(con: duckdb.DuckDBPyConnection, retrain: Mapping[str, Any], gate: Mapping[str, Any] | None,
             ) -> dict[str, Any] | None:
    """The new model, its ancestors up to five back, the run that trained it and the data it saw."""
    model = (retrain.get("trained") or {}).get("model") or (gate or {}).get("challenger")
    if model is None:
        return None
    chain, seen = [], set()
    current: str | None = model
    while current and current not in seen and len(chain) < 6:
        seen.add(current)
        row = con.execute("SELECT id, parent_id, dataset_version, status, origin, note, created_at FROM models "
                          "WHERE id = ?", [current]).fetchone()
        if row is None:
            break
        chain.append(dict(zip(("id", "parent", "dataset_version", "status", "origin", "note", "created_at"), row)))
        current = row[1]
    run = con.execute("SELECT profile, params, started_at, duration_s, dataset_version FROM training_runs "
                      "WHERE model_id = ? ORDER BY started_at DESC LIMIT 1", [model]).fetchone()
    training = None
    if run is not None:
        params = json.loads(run[1])
        training = {"profile": run[0], "started_at": run[2], "duration_s": run[3], "dataset_version": run[4],
                    "params": {k: v for k, v in params.items() if isinstance(v, str | int | float | bool)}}
    version = (training or {}).get("dataset_version") or retrain.get("dataset_version")
    dataset = con.execute("SELECT version, n_train, n_holdout, n_synthetic, created_at FROM datasets WHERE version = ?",
                          [version]).fetchone() if version is not None else None
    return {"model": model, "chain": chain, "training": training,
            "dataset": None if dataset is None else dict(zip(("version", "train", "holdout", "synthetic",
                                                              "created_at"), dataset))}


def _stages(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in summary.get("stages", []):
        result = s.get("result") or {}
        cost = result.get("cost_usd")
        out.append({"name": s["name"], "status": s["status"], "seconds": s.get("seconds"),
                    "cost_usd": float(cost) if isinstance(cost, int | float) else None,
                    "note": result.get("skipped") if s["status"] == "skipped" else _facts(result)})
    return out


def _story(stages: Mapping[str, Any], data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The cycle in one line, stage by stage: what went in and what came out ('12 captures in', '6 reviewed,
    30 failures found', ...); a skipped stage says why."""
    def say(stage: Mapping[str, Any]) -> str:
        r = stage.get("result") or {}
        if stage["status"] == "skipped":
            return str(r.get("skipped"))
        match stage["name"]:
            case "ingest":
                return f"{r.get('captures_added', 0)} captures in"
            case "review push":
                return f"{r.get('pushed', 0)} sent for review"
            case "review pull":
                return f"{r.get('verified', 0)} reviewed, {r.get('failures', 0)} failures found"
            case "mine":
                # The stage's own count: the mining section shows only the largest few of them.
                return f"{r.get('clusters', data['mining']['total'])} blind spots"
            case "synthesize":
                runs = [x for c in data["mining"]["clusters"] for x in c["runs"]] + data["mining"]["runs_without_cluster"]
                return (f"{sum(x['kept'] or 0 for x in runs)} synthetic images kept, "
                        f"{sum(x['rejected'] or 0 for x in runs)} rejected")
            case "retrain":
                dataset = (data["lineage"] or {}).get("dataset") or {}
                if not dataset:
                    return f"dataset v{r.get('dataset_version')}"
                return (f"trained on dataset v{dataset['version']} ({dataset['train']} images, "
                        f"{dataset['synthetic']} synthetic): {data['verdict']['state']}")
            case "publish":
                rollout = data["rollout"].get("rollout") or {}
                if rollout.get("state") == "canary" and (rollout.get("canary_pct") or 0) >= 100:
                    return "canary on every device"
                return f"{rollout.get('state', 'published')} on {rollout.get('canary_pct', '?')}%"
        return _facts(r) or "done"

    return [{"stage": s["name"], "status": s["status"], "text": say(s)} for s in stages.values()]


def _facts(result: Mapping[str, Any]) -> str:
    """A stage's scalar results as 'key n' pairs: what it did, in a line."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items()
                     if isinstance(v, int | float) and not isinstance(v, bool) and k != "cost_usd")


def _stage_note(stages: Mapping[str, Any], name: str) -> str | None:
    stage = stages.get(name)
    if stage is None:
        return NOT_RUN
    return (stage.get("result") or {}).get("skipped") if stage["status"] == "skipped" else None


def _name(names: Sequence[str], class_id: int | None) -> str | None:
    if class_id is None:
        return None
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if value else None
