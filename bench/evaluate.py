"""Benchmark: `edgeloop eval` of a checkpoint on a labelled YOLO folder (default: ppe_base.pt on PPE val).

Prints one JSON line last: {"images", "imgsz", "predict_seconds", "total_seconds", "images_per_s", "map50",
"map50_95", ...}; seconds are medians over --rounds full evaluations (predict, COCO mAP, operating point).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select`: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"


def subset(data: Path, limit: int, into: Path) -> Path:
    """The first `limit` images of DATA (and their label files), linked into a folder of their own."""
    for sub in ("images", "labels"):
        (into / sub).mkdir(parents=True)
    for image in sorted((data / "images").iterdir())[:limit]:
        (into / "images" / image.name).symlink_to(image.resolve())
        label = data / "labels" / f"{image.stem}.txt"
        if label.exists():
            (into / "labels" / label.name).symlink_to(label.resolve())
    if (data / "data.yaml").exists():
        (into / "data.yaml").symlink_to((data / "data.yaml").resolve())
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "ppe_base.pt", help=".pt or .onnx")
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "ppe" / "val", help="images/ + labels/")
    parser.add_argument("--names", default="helmet,no_helmet,no_wear,wear", help="comma-separated class names")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")
    parser.add_argument("--rounds", type=int, default=3, help="full evaluations; medians are reported")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from feedback.evaluation.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, args.limit, Path(tmp) / "data") if args.limit else args.data
        names = args.names.split(",") if args.names else None
        evaluate(args.model, data, names=names, batch=args.batch, progress=False)  # warm-up: load, first batch
        runs = [evaluate(args.model, data, names=names, batch=args.batch, progress=False) for _ in range(args.rounds)]
    predict = [r["seconds"]["predict"] for r in runs]
    total = [r["seconds"]["total"] for r in runs]
    for i, (p, t) in enumerate(zip(predict, total, strict=True)):
        print(f"round {i + 1}: predict {p:.2f} s, total {t:.2f} s", file=sys.stderr)
    last = runs[-1]
    print(json.dumps({
        "model": str(args.model), "data": str(args.data), "images": last["images"], "imgsz": last["imgsz"],
        "limit": args.limit, "batch": args.batch, "rounds": args.rounds, "cpus": os.cpu_count(),
        "predict_seconds": statistics.median(predict), "total_seconds": statistics.median(total),
        "images_per_s": round(last["images"] / statistics.median(total), 1),
        "map50": last["map50"], "map50_95": last["map50_95"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
