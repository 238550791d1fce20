"""The most rare boxes any review plan could buy at random's seconds: where the 4x bar of issue 26 sits.

Reads the pool's answers (so it is a ceiling, not a strategy) and prices every frame's full review with the product's
cost model against the boxes the edge uploaded (`bench/loop.py`'s pool captures). Two plans with perfect knowledge:
`frames` reviews the frames richest in rare boxes per second; `hunt` first asks one yes/no question per true rare box
(2 s each) and reviews the frame with those boxes drawn in, as a rare-class pass whose every question is a yes. It
also says how precise the questions must be for 4x: the seconds left once the best frames reach 4x random's boxes
(each of their rare boxes asked about and answered yes), spent on questions answered no.

    python bench/acquisition_ceiling.py --data ../shared/datasets/ppe --captures OUT/shared/pool_captures_320.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # as bench/loop.py: bench/select.py would shadow `select`

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from feedback.review.effort import CostModel, box_actions  # noqa: E402
from feedback.review.oracle import read_yolo_labels  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "loop"


def frame_costs(captures: Path, labels: Path, rare_id: int, cost: CostModel) -> list[tuple[int, float, float]]:
    """(rare boxes, full review seconds, questions + full review seconds with the rare boxes drawn) per frame."""
    frames = []
    for line in captures.read_text().splitlines():
        item = json.loads(line)
        meta = item["meta"]
        truth, classes = read_yolo_labels(labels / f"{Path(item['image']).stem}.txt", meta["frame_width"],
                                          meta["frame_height"])
        found = meta["detections"]
        shown = np.asarray([d["xyxy"] for d in found], np.float64).reshape(-1, 4)
        shown_classes = np.asarray([d["class_id"] for d in found], np.int64)
        shown_conf = np.asarray([d["confidence"] for d in found], np.float64)
        rare = classes == rare_id
        plain = cost.price(box_actions(truth, classes, shown, shown_classes, shown_conf)[0])
        drawn = box_actions(truth, classes, np.vstack([shown, truth[rare]]),
                            np.append(shown_classes, classes[rare]), np.append(shown_conf, np.ones(rare.sum())))[0]
        frames.append((int(rare.sum()), plain, rare.sum() * cost.seconds["kept"] + cost.price(drawn)))
    return frames


def best_within(frames: list[tuple[int, float, float]], which: int, seconds: float) -> dict[str, float]:
    """Greedy by rare boxes per second (a knapsack's near-optimum when items are small against the budget)."""
    spent = got = n = 0
    for f in sorted((f for f in frames if f[0]), key=lambda f: -f[0] / f[which]):
        if spent + f[which] <= seconds:
            spent, got, n = spent + f[which], got + f[0], n + 1
    return {"rare_boxes": got, "frames": n, "seconds": round(spent, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="PPE-style folder (its pool/labels are read)")
    parser.add_argument("--captures", type=Path, required=True, help="bench/loop.py's pool_captures_<imgsz>.jsonl")
    parser.add_argument("--rare-id", type=int, default=1, help="the rare class's id (no_helmet)")
    parser.add_argument("--bar", type=float, default=4.0, help="the multiple of random's rare boxes asked for")
    args = parser.parse_args()
    timed = RESULTS / "acquisition_time.json"  # bench/loop.py --acquire-only with the time arms: random's seconds
    if not timed.exists():
        parser.error(f"{timed} is missing: run bench/loop.py --acquire-only --arms random,... first")
    random = json.loads(timed.read_text())["arms"]["random"]
    seconds, random_boxes = random["annotator_s"]["mean"], random["rare_boxes_acquired"]["mean"]
    cost = CostModel()
    frames = frame_costs(args.captures, args.data / "pool" / "labels", args.rare_id, cost)
    out: dict[str, object] = {"random": {"seeds": len(random["seeds"]), "annotator_s": round(seconds, 1),
                                         "rare_boxes": round(random_boxes, 2)},
                              "pool": {"frames": len(frames), "rare_boxes": sum(f[0] for f in frames)}}
    for name, which in (("frames", 1), ("hunt", 2)):
        best = best_within(frames, which, seconds)
        out[name] = best | {"x_random": round(best["rare_boxes"] / random_boxes, 2)}
    # The cheapest way to the bar: the perfect hunt's frames in order until 4x random's boxes, and what is left.
    spent = got = n = 0
    for f in sorted((f for f in frames if f[0]), key=lambda f: -f[0] / f[2]):
        if got >= args.bar * random_boxes:
            break
        spent, got, n = spent + f[2], got + f[0], n + 1
    wasted = max(0, int((seconds - spent) // cost.seconds["kept"]))
    out["bar"] = {"x": args.bar, "frames": n, "rare_boxes": got, "seconds": round(spent, 1),
                  "no_answers_affordable": wasted, "yes_rate_needed": round(got / (got + wasted), 3) if got + wasted else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
