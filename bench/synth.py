"""Benchmark: 1,000 `swap` images with every filter, on PPE `base/` with `ppe_base.pt` as the champion (the embedder).

Prints one JSON line last: {"images", "kept", "rejected", "seconds", "cpu_seconds", "under_5_min", ...}; "seconds" is
`synthesize` end to end (material, references, generation, filters, storage, domain gap), not the workspace's set-up.
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
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.evaluate import subset  # noqa: E402 - the same YOLO-folder cut, data.yaml and all

os.environ.setdefault("YOLO_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
NAMES = ["helmet", "no_helmet", "no_wear", "wear"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="swap images to make")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "ppe")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "ppe_base.pt")
    parser.add_argument("--holdout", type=int, default=30, help="val images the gate judges the champion on")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    from feedback.datasets.yolo_import import import_yolo
    from feedback.synthesis.service import synthesize_for_loop
    from feedback.training.gate_run import run_gate
    from store.settings import Settings, Workspace

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ws = Workspace(Settings(workspace=root / "ws", fsync=False))
        import_yolo(ws, args.data / "base", "train", names=NAMES, progress=False)
        import_yolo(ws, subset(args.data / "val", args.holdout, root / "holdout"), "holdout", names=NAMES,
                    progress=False)
        gate = run_gate(ws, str(args.model), progress=False)  # the first model is promoted: the champion
        setup = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        out = synthesize_for_loop(ws, args.n, args.seed)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    kept = out["kept"]
    print(json.dumps({
        "bench": "synth", "generator": "swap", "images": args.n, "kept": kept, "rejected": out["rejected"],
        "hard": out["hard"], "target_class": NAMES[out["target_class"]],
        "confusable": [NAMES[c] for c in out["confusable_classes"]], "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),  # this process's CPU time: the wall time on cores nobody else uses
        "images_per_s": round(args.n / seconds, 2), "under_5_min": seconds < 300, "setup_seconds": round(setup, 2),
        "champion_promoted": gate.decision.promoted, "domain_gap": out["domain_gap"], "embedder": out["embedder"],
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine slows every figure above
    }))


if __name__ == "__main__":
    main()
