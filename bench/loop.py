"""Benchmark: how much better the rare class gets per label a person spends, through the product's own loop.

Each arm/seed: a fresh workspace with the base set imported (train) and the real validation split (holdout);
the base model registered as champion; the pool detected as the edge would (the exported ONNX, its decoding
and its sub-threshold class evidence) and uploaded through the ingest API; `budget` captures chosen by the
arm's strategy and reviewed by the oracle (the pool's own labels), for active in `--rounds` review cycles that
each see the reviews before them; a dataset version built; the champion
fine-tuned with the same recipe for every arm; the result evaluated on real images with `edgeloop eval`'s
code. Arms: base (no new labels: the recipe alone), random (the baseline), active (the product's default),
random+synth / active+synth: the same labels as their base arm plus `--synthetic` swap images made only from
that arm's own verified labels (feedback.synthesis.service.synthesize_for_loop), and oracle: the captures
holding the most rare boxes, chosen by reading the answers: not a strategy, but the most rare boxes any
selection can buy, and what training on them gains.

    python bench/loop.py --data ../shared/datasets/ppe --base-model ../shared/models/ppe_base.pt \\
        --budget 150 --arms base,random,active --seeds 0,1,2 --epochs 10 --imgsz 320 --out DIR

Resumes: every finished step leaves a file in DIR/<arm>_<seed>/, and each finished run's result is also
copied to bench/results/loop/ (commit it) so a later run with the same settings reuses it instead of
retraining. `--acquire-only` stops after review (minutes): the rare boxes each strategy acquires.
Prints one JSON line last: per arm, means and 95% confidence intervals over seeds, and gains over base
paired by seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select`: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "loop"
DEVICE = "bench-cam"
RECIPE_VERSION = 1  # bump when the loop's code path changes what a run measures


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)  # a crash never leaves half a result that a rerun would trust


# ----------------------------------------------------------------------------- the edge's view of the pool


def edge_captures(data: Path, base_model: Path, imgsz: int, shared: Path, rare: str) -> Path:
    """Every pool image through the edge detector (exported ONNX, edge decoding, class evidence): one
    JSON line per image with the capture meta a device would send. Computed once for all arms."""
    out = shared / f"pool_captures_{imgsz}.jsonl"
    if out.exists():
        return out
    from ultralytics import YOLO

    from edge.detectors.load import load_detector
    from edge.protocol import CaptureMeta, Detection, SourceRef
    from edge.triggers import TriggerConfig

    shared.mkdir(parents=True, exist_ok=True)
    pt = shared / "base.pt"
    shutil.copyfile(base_model, pt)  # export writes beside its input
    onnx = Path(YOLO(str(pt)).export(format="onnx", imgsz=imgsz, verbose=False))
    detector = load_detector(onnx)
    watched = [k for k, name in detector.names.items() if name == rare]
    triggers = TriggerConfig(watch_classes=tuple(watched))
    lines = []
    import cv2

    images = sorted((data / "pool" / "images").glob("*.jpg"))
    log(f"detecting {len(images)} pool images with {onnx.name} as the edge would")
    for path in images:
        frame = cv2.imread(str(path))
        found = detector.detect(frame)
        evidence = (found.metadata or {}).get("class_evidence")
        # Why a device would have sent it: the edge miner's own bands; anything else stands for its random sample.
        # rare_class here is the band alone, as the saved results were measured. The device now also ranks the
        # evidence against its recent frames (TriggerConfig.rare_top); labelled by the miner that way, active
        # seed 0 acquired 216 no_helmet boxes against 211.
        low, high = triggers.uncertainty_band
        reasons = ["uncertainty"] if any(low <= c < high for c in found.confidence) else []
        if evidence is not None and any(triggers.rare_band[0] <= evidence[k] < triggers.rare_band[1] for k in watched):
            reasons.append("rare_class")
        h, w = frame.shape[:2]
        meta = CaptureMeta(
            device=DEVICE, camera="pool", captured_at=datetime.now(timezone.utc), frame_width=w, frame_height=h,
            model_version=detector.model_version, triggers=reasons or ["random"], source=SourceRef(uri=path.name),
            detections=[Detection(xyxy=tuple(map(float, b)), confidence=float(c), class_id=int(k),
                                  class_name=detector.names.get(int(k))) for b, c, k in
                        zip(found.xyxy, found.confidence, found.class_id, strict=True)],
            class_evidence=None if evidence is None else [round(float(v), 5) for v in evidence],
        )
        lines.append(json.dumps({"image": str(path), "meta": meta.model_dump(mode="json")}))
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    return out


# ----------------------------------------------------------------------------- one arm, one seed


def prepare(run: Path, data: Path, base_model: Path, captures: Path, names: list[str]) -> Any:
    """The arm's workspace: base imported, val as the real holdout, base model champion, pool uploaded."""
    from edge.client import IngestClient
    from edge.protocol import CaptureMeta
    from feedback.datasets.yolo_import import import_yolo
    from feedback.ingest.serving import BackgroundServer
    from feedback.training.gate_run import run_gate
    from store.devices import add_device
    from store.inbox import load_inbox
    from store.models import champion
    from store.settings import Settings, Workspace

    ws = Workspace(Settings(workspace=run / "ws", fsync=False))
    if (run / "prepared.json").exists():
        return ws
    started = time.perf_counter()
    log(f"{run.name}: importing base (train) and val (holdout)")
    import_yolo(ws, data / "base", "train", names=names, progress=False)
    import_yolo(ws, data / "val", "holdout", names=names, progress=False)
    with ws.catalog.connect() as con:
        current = champion(con)
    if current is None:
        run_gate(ws, str(base_model), progress=False)  # the first model is promoted: it is what the devices run
    token_file = run / "device-token"  # kept, so a rerun after a crash uploads as the same device
    if not token_file.exists():
        token_file.write_text(add_device(ws.catalog, ws.objects, DEVICE))
    token = token_file.read_text()
    log(f"{run.name}: uploading the pool through the ingest API")
    with BackgroundServer(ws.settings) as url, IngestClient(url, token) as client:
        for line in captures.read_text().splitlines():
            item = json.loads(line)
            client.upload_capture(CaptureMeta.model_validate(item["meta"]), Path(item["image"]).read_bytes(),
                                  "image/jpeg")  # idempotent: a rerun after a crash re-sends safely
    loaded = load_inbox(ws.catalog, ws.inbox)
    write_json(run / "prepared.json", {"captures": loaded.captures_added,
                                       "seconds": round(time.perf_counter() - started, 1)})
    return ws


def acquire(ws: Any, run: Path, arm: str, seed: int, budget: int, rounds: int, data: Path,
            names: list[str], rare: str, budget_seconds: float | None = None) -> dict[str, Any]:
    """Select and review (oracle) `budget` captures in `rounds` pushes (or, for `active/s`, as many as
    `budget_seconds` of a person's predicted time buys, ranked by value per second); the boxes this bought, by
    class, and what they cost a person under the cost model.

    Between two rounds the reviews are pulled, so active's next push sees them as the product's next cycle
    would: the probe refits on the new verified boxes, and the failures they reveal seed retrieval."""
    from feedback.review.boxes import prepare_vectors
    from feedback.review.oracle import OracleReviewer
    from feedback.review.selection import SelectionConfig
    from feedback.review.workflow import pull_reviews, push_captures, push_for_review

    if (run / "acquired.json").exists():
        return json.loads((run / "acquired.json").read_text())
    started = time.perf_counter()
    reviewer = OracleReviewer(data / "pool" / "labels")
    strategy = arm.removesuffix("+synth").removesuffix("/s")
    # Every reviewed capture trains: the real holdout is val, kept apart and the same for all arms.
    pull_reviews(ws, reviewer=reviewer, holdout_share=0.0)  # a crash after a push: its reviews first
    for r in range(rounds if arm != "base" else 0):
        with ws.catalog.connect() as con:
            pushed = con.execute("SELECT count(*) FROM review_tasks").fetchone()[0]
        size = budget * (r + 1) // rounds - pushed  # this round's share, less what a crashed run pushed
        seconds = None
        if budget_seconds is not None:  # the time budget's share, less what was spent (by the same cost model)
            size, seconds = 1_000_000, budget_seconds * (r + 1) / rounds - annotator_seconds(ws)
        if size <= 0 or (seconds is not None and seconds <= 0):
            continue
        if strategy == "active+hunt":
            hunt_until(ws, reviewer, names, names.index(rare), budget_seconds or 0.0)
            break  # the pass runs its own batches until the seconds are spent
        if strategy == "oracle":
            push_captures(ws, oracle_picks(ws, size, reviewer, names.index(rare), seed), reviewer=reviewer,
                          strategy="oracle")
        else:
            embedder = prepare_vectors(ws, progress=False) if strategy == "active" else None
            config = SelectionConfig(strategy=strategy, seed=seed, embedder=embedder,
                                     per_second=budget_seconds is not None)
            push_for_review(ws, size, reviewer=reviewer, selection=config, budget_seconds=seconds)
        pull_reviews(ws, reviewer=reviewer, holdout_share=0.0)
        if rounds > 1:
            log(f"{run.name}: round {r + 1} of {rounds}: {pushed + size} of {budget} captures reviewed")
    with ws.catalog.connect() as con:
        rows = con.execute(
            "SELECT b.class_id, count(*) FROM review_tasks t JOIN label_boxes b ON b.label_id = t.label_id "
            "WHERE t.status = 'verified' GROUP BY b.class_id").fetchall()
        images = con.execute("SELECT count(*) FROM review_tasks WHERE status = 'verified'").fetchone()[0]
    by_class = {names[k]: int(n) for k, n in rows}
    result = {"images_reviewed": int(images), "boxes_labelled": sum(by_class.values()),
              "boxes_by_class": {n: by_class.get(n, 0) for n in names}, "annotator_s": annotator_seconds(ws),
              "seconds": round(time.perf_counter() - started, 1)}
    write_json(run / "acquired.json", result)
    return result


def hunt_until(ws: Any, reviewer: Any, names: list[str], rare_id: int, budget_seconds: float,
               batch: int = 20) -> None:
    """The rare-class pass as a site would run it: batches of yes/no questions about the boxes the probe finds
    likeliest to be the rare class (2 s each under the cost model), each yes or not-sure frame then fully reviewed,
    the probe refitting between batches on the new labels and the no's; until `budget_seconds` of a person's time
    is spent (the last batch may overrun by its full reviews). Left with nothing to ask, active selection per
    image spends the rest."""
    from feedback.review.boxes import prepare_vectors
    from feedback.review.hunt import OracleHunt, choose_questions, pull_hunt, push_hunt
    from feedback.review.selection import SelectionConfig
    from feedback.review.workflow import pull_reviews, push_for_review

    embedder = prepare_vectors(ws, progress=False)
    hunter = OracleHunt(reviewer)
    while (left := budget_seconds - annotator_seconds(ws)) >= 2.0:
        questions = choose_questions(ws, rare_id, embedder, budget=batch, budget_seconds=left)
        if not questions:
            config = SelectionConfig(strategy="active", embedder=embedder)
            push_for_review(ws, 1_000_000, reviewer=reviewer, selection=config, budget_seconds=left)
            pull_reviews(ws, reviewer=reviewer, holdout_share=0.0)
            return
        push_hunt(ws, questions, reviewer=hunter, class_name=names[rare_id])
        pull_hunt(ws, reviewer=hunter, full_review=reviewer)
        pull_reviews(ws, reviewer=reviewer, holdout_share=0.0)


def time_budget(args: argparse.Namespace, seed: int) -> float:
    """The seconds of a person's time random's reviews of this seed cost: what the `/s` arms may spend."""
    from store.settings import Settings, Workspace

    run = run_dir(args, "random", seed)
    if not (run / "acquired.json").exists():
        sys.exit(f"the /s arms spend random's review time: run the random arm of seed {seed} first "
                 "(list it before them in --arms)")
    acquired = json.loads((run / "acquired.json").read_text())
    if "annotator_s" not in acquired:
        acquired["annotator_s"] = annotator_seconds(Workspace(Settings(workspace=run / "ws", fsync=False)))
        write_json(run / "acquired.json", acquired)
    return acquired["annotator_s"]


def annotator_seconds(ws: Any) -> float:
    """People's time behind every review in the workspace, as the product counts it (each task's stored effort;
    the oracle is priced by the cost model, as a person verifying the same boxes would be)."""
    from feedback.report.effort import review_effort
    from feedback.review.effort import CostModel

    from store.hunt_tasks import hunt_seconds

    with ws.catalog.connect() as con:
        effort = review_effort(con, (datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc)),
                               CostModel.from_settings(ws.settings.review_seconds))
        questions = hunt_seconds(con)
    return round((effort.seconds if effort else 0.0) + questions, 1)


def oracle_picks(ws: Any, budget: int, reviewer: Any, rare_id: int, seed: int) -> list[Any]:
    """The candidates holding the most rare boxes by the answers themselves (ties in seeded random order): no
    selection can buy more. It reads the labels before anyone reviews, so it is a reference, not a strategy."""
    from store.review_tasks import CANDIDATES_SQL
    from feedback.review.oracle import label_file, read_yolo_labels
    from feedback.review.selection import Candidate

    with ws.catalog.connect() as con:
        rows = con.execute(f"SELECT c.id, cap.source_uri, cap.source_frame FROM ({CANDIDATES_SQL}) c "
                           "JOIN captures cap ON cap.id = c.id ORDER BY c.id").fetchall()
    counts = []
    for capture_id, uri, frame in rows:
        path = label_file(reviewer.labels_dir, uri or capture_id, frame)
        counts.append(int((read_yolo_labels(path, 1, 1)[1] == rare_id).sum()) if path.is_file() else 0)
    tiebreak = np.random.default_rng(seed).permutation(len(rows))
    order = np.lexsort((tiebreak, -np.asarray(counts)))[:budget]
    return [Candidate(rows[i][0], float(counts[i]), {"rare_boxes": float(counts[i])}) for i in order]


def add_synthetic(ws: Any, run: Path, n: int, seed: int) -> dict[str, Any]:
    """N swap images made only from this arm's own verified labels (the rarest class, from its confusable one)."""
    from feedback.synthesis.service import synthesize_for_loop

    if (run / "synthetic.json").exists():
        return json.loads((run / "synthetic.json").read_text())
    log(f"{run.name}: making {n} swap images from its own verified labels")
    started = time.perf_counter()
    made = synthesize_for_loop(ws, n, seed)
    result = {k: made[k] for k in ("run_id", "target_class", "confusable_classes", "requested", "kept", "rejected",
                                   "domain_gap") if k in made}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(run / "synthetic.json", result)
    return result


def fine_tune(ws: Any, run: Path, seed: int, epochs: int, imgsz: int, recipe: Any, rare: str) -> Path:
    """The champion fine-tuned on everything verified, the same recipe for every arm; weights at run/best.pt.
    `recipe` None: the recipe from before wave 3 (every class alike, --imgsz); else the rare-aware levers, with
    the measured class watched (as the device watches it): after active review it is no longer "rare" by count
    (240 no_helmet boxes against 2,200 helmets is over a tenth), yet it is the class the site needs seen."""
    from feedback.training.recipe import Recipe
    from feedback.training.train import train

    best = run / "best.pt"
    if best.exists():
        return best
    overrides = {"epochs": epochs}
    if recipe is None or recipe.min_rare_px is None:
        overrides["imgsz"] = imgsz  # otherwise the recipe sizes it from the rare boxes
    log(f"{run.name}: fine-tuning the champion ({epochs} epochs, {'rare-aware' if recipe else 'default'} recipe)")
    started = time.perf_counter()
    result = train(ws, parent="champion", overrides=overrides, seed=seed, recipe=recipe or Recipe.off(),
                   watch=[rare] if recipe else ())
    tmp = run / "best.pt.tmp"
    tmp.write_bytes(ws.blobs.get(result.weights_sha256))
    tmp.replace(best)
    with ws.catalog.connect() as con:
        params = json.loads(con.execute("SELECT params FROM training_runs WHERE model_id = ?",
                                        [result.model_id]).fetchone()[0])
    write_json(run / "trained.json", {"model": result.model_id, "dataset_version": result.dataset_version,
                                      "seconds": round(time.perf_counter() - started, 1),
                                      "train_seconds": round(result.duration_s, 1), "imgsz": result.params["imgsz"],
                                      "thresholds": result.thresholds, "recipe": params.get("recipe")})
    return best


def judge(weights: Path, data_dir: Path, out: Path, rare: str,
          thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """`edgeloop eval`'s code on real images, at the model's own per-class thresholds where it has them (chosen
    on its calibration split, never on these images); the numbers the benchmark reports."""
    from feedback.evaluation.evaluate import evaluate

    if out.exists():
        metrics = json.loads(out.read_text())
    else:
        metrics = evaluate(weights, data_dir, progress=False, thresholds=thresholds)
        write_json(out, metrics)  # its "seconds" field is the evaluation's own time
    cls = metrics["per_class"][rare]
    return {"map50": metrics["map50"], "map50_95": metrics["map50_95"], "rare_ap50": cls["map50"],
            "rare_recall": cls["recall"], "rare_precision": cls["precision"],
            "rare_threshold": cls.get("threshold", 0.25)}


def run_one(args: argparse.Namespace, arm: str, seed: int, captures: Path, names: list[str]) -> dict[str, Any]:
    rounds = rounds_of(arm, args.rounds)
    run = run_dir(args, arm, seed)
    key = run.name
    config = settings(args)
    if args.recipe != "default":
        config["training_recipe"] = recipe_config(args)  # only these arms: the default arms' saved results stay valid
    if arm.endswith("+synth"):
        config["synthetic"] = args.synthetic  # only these arms depend on it: the others' saved results stay valid
    if rounds > 1:
        config["rounds"] = rounds  # one push (the default) keeps the saved results' settings
    done = run / "result.json"
    saved = RESULTS / f"{key}.json"
    for source in (done, saved):
        if source.exists() and (result := json.loads(source.read_text())).get("config") == config:
            if args.acquire_only and "annotator_s" not in result["acquired"]:
                break  # saved before review effort was counted: review again (the same picks) to count it
            log(f"{key}: reusing {source}")
            return result
    run.mkdir(parents=True, exist_ok=True)
    stamp = run / "config.json"  # the settings its step files were made with: never resume across a change
    if stamp.exists() and (made := json.loads(stamp.read_text())) != config:
        sys.exit(f"{run} was made with other settings ({made}, now {config}): delete it or use another --out")
    write_json(stamp, config)
    reuse_acquisition(args, arm, seed, run)
    ws = prepare(run, args.data, args.base_model, captures, names)
    seconds = time_budget(args, seed) if arm.endswith("/s") or arm == "active+hunt" else None
    acquired = acquire(ws, run, arm, seed, args.budget, rounds, args.data, names, args.rare_class, seconds)
    if "annotator_s" not in acquired:  # acquired before effort was counted: count it now from the reviews
        acquired["annotator_s"] = annotator_seconds(ws)
        write_json(run / "acquired.json", acquired)
    log(f"{key}: {acquired['boxes_by_class']} from {acquired['images_reviewed']} reviewed images")
    result: dict[str, Any] = {"arm": arm, "seed": seed, "config": config, "acquired": acquired}
    if args.acquire_only:
        return result
    if arm.endswith("+synth"):
        result["synthetic"] = add_synthetic(ws, run, args.synthetic, seed)
    weights = fine_tune(ws, run, seed, args.epochs, args.imgsz, recipe_of(args), args.rare_class)
    trained = json.loads((run / "trained.json").read_text())
    result["training"] = {k: trained.get(k) for k in ("train_seconds", "imgsz", "thresholds", "recipe")}
    result["val"] = judge(weights, args.data / "val", run / "metrics_val.json", args.rare_class,
                          trained.get("thresholds"))
    # Each step's own time, so a resumed run reports what the whole run took, not the last sitting.
    result["wall_s"] = round(sum(json.loads((run / f).read_text()).get("seconds", 0)
                                 for f in ("prepared.json", "acquired.json", "synthetic.json", "trained.json")
                                 if (run / f).exists()), 1)
    write_json(done, result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(saved, result)
    log(f"{key}: val {result['val']}")
    return result


def rounds_of(arm: str, rounds: int) -> int:
    """Only active selection reads earlier rounds' reviews; random in rounds is one uniform draw, so it always
    draws once (and its saved results serve every --rounds)."""
    return rounds if arm.startswith("active") else 1


def run_dir(args: argparse.Namespace, arm: str, seed: int) -> Path:
    """DIR/<arm>[_r<rounds>][_<recipe>]_<seed>; its name also names the saved result in bench/results/loop/."""
    rounds = rounds_of(arm, args.rounds)
    recipe = f"_{recipe_name(args)}" if args.recipe != "default" else ""
    return args.out / f"{arm.replace('+', '_').replace('/s', '_ps')}{f'_r{rounds}' if rounds > 1 else ''}{recipe}_{seed}"


def recipe_name(args: argparse.Namespace) -> str:
    """"rare", or "rare" and the levers changed from its defaults, for the ablation's run names."""
    from feedback.training.recipe import Recipe

    changed = [f"{k}={v}" for k, v in recipe_config(args).items() if k != "imgsz" and v != getattr(Recipe(), k)]
    return "rare" + "".join(f"-{c.replace('_', '')}" for c in changed)


def recipe_of(args: argparse.Namespace) -> Any:
    """The training recipe the flags ask for; None: the recipe from before (--recipe default)."""
    from feedback.training.recipe import Recipe

    if args.recipe == "default":
        return None
    return Recipe(**{k: v for k, v in recipe_config(args).items() if k != "imgsz"})


def recipe_config(args: argparse.Namespace) -> dict[str, Any]:
    """The rare recipe's levers as set by the flags (each switchable for ablation)."""
    return {"repeat_threshold": None if args.no_repeat else args.repeat_t, "class_weight_power": args.class_weights,
            "min_rare_px": None if args.no_resolution else args.min_rare_px,
            "calibration_share": 0.0 if args.no_calibration else args.calibration_share,
            "rare_checkpoint": not (args.no_calibration or args.no_rare_checkpoint),
            "operating_precision": args.operating_precision,
            **({"imgsz": args.imgsz} if args.no_resolution else {}),
            **({"copy_paste": args.copy_paste} if args.copy_paste else {})}  # absent when off: saved runs stay valid


def reuse_acquisition(args: argparse.Namespace, arm: str, seed: int, run: Path) -> None:
    """A recipe run starts from the same reviews as the plain arm's other runs of this seed (selection never
    reads the training recipe, nor synthesis): copy a finished sibling's workspace as it stood after review."""
    if (run / "prepared.json").exists():
        return
    plain, same = arm.removesuffix("+synth"), ("budget", "imgsz", "rare_class", "base_model_sha256", "rounds")
    mine = json.loads((run / "config.json").read_text())
    for sibling in sorted(args.out.iterdir()):
        ours = sibling.name == f"{plain}_{seed}" or (sibling.name.startswith(f"{plain}_")
                                                     and sibling.name.endswith(f"_{seed}"))
        if not ours or sibling == run or "_synth" in sibling.name or not (sibling / "acquired.json").exists():
            continue
        theirs = json.loads((sibling / "config.json").read_text())
        if any(theirs.get(k) != mine.get(k) for k in same):
            continue
        log(f"{run.name}: starting from {sibling.name}'s reviews")
        tmp = run / "ws.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(sibling / "ws", tmp, symlinks=True)
        tmp.replace(run / "ws")
        for name in ("device-token", "prepared.json", "acquired.json"):
            shutil.copyfile(sibling / name, run / name)
        return


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs comparable: a saved result is reused only under the same settings."""
    return {"budget": args.budget, "epochs": args.epochs, "imgsz": args.imgsz, "rare_class": args.rare_class,
            "base_model_sha256": sha256(args.base_model)[:16], "recipe": RECIPE_VERSION}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- summary


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean and the 95% t-interval over seeds (None with one seed)."""
    from scipy import stats

    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(a):
        return {"mean": None, "ci95": None, "n": 0}
    if len(a) < 2:
        return {"mean": round(float(a.mean()), 4), "ci95": None, "n": 1}
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return {"mean": round(float(a.mean()), 4), "ci95": [round(float(a.mean()) - half, 4),
                                                        round(float(a.mean()) + half, 4)], "n": int(len(a))}


def summarise(results: list[dict[str, Any]], rare: str, eval_key: str) -> dict[str, Any]:
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    out: dict[str, Any] = {}
    for arm, runs in by_arm.items():
        row: dict[str, Any] = {
            "seeds": sorted(runs),
            "rare_boxes_acquired": mean_ci([r["acquired"]["boxes_by_class"].get(rare, 0) for r in runs.values()]),
            "boxes_labelled": mean_ci([r["acquired"]["boxes_labelled"] for r in runs.values()]),
            "annotator_s": mean_ci([r["acquired"].get("annotator_s") for r in runs.values()]),
            # The number a site judges review by: rare boxes bought per hour of a person's time.
            "rare_boxes_per_hour": mean_ci([3600 * r["acquired"]["boxes_by_class"].get(rare, 0)
                                            / r["acquired"]["annotator_s"] for r in runs.values()
                                            if r["acquired"].get("annotator_s")]),
        }
        if all(eval_key in r for r in runs.values()):
            for metric in ("map50", "map50_95", "rare_ap50", "rare_recall", "rare_precision", "rare_threshold"):
                row[metric] = mean_ci([r[eval_key].get(metric) for r in runs.values()])
            if all("training" in r for r in runs.values()):
                row["train_seconds"] = mean_ci([r["training"]["train_seconds"] for r in runs.values()])
                row["imgsz"] = sorted({r["training"]["imgsz"] for r in runs.values()})
            base = by_arm.get("base", {})
            paired = [s for s in runs if s in base and eval_key in base[s]]
            if arm != "base" and paired:
                for metric in ("rare_ap50", "map50"):
                    row[f"gain_{metric}_over_base"] = mean_ci([runs[s][eval_key][metric] - base[s][eval_key][metric]
                                                               for s in paired])
                row["gain_rare_ap50_per_annotator_hour"] = mean_ci([
                    3600 * (runs[s][eval_key]["rare_ap50"] - base[s][eval_key]["rare_ap50"])
                    / runs[s]["acquired"]["annotator_s"] for s in paired if runs[s]["acquired"].get("annotator_s")])
                # Per label a person spends, if the cost is per box drawn rather than per image reviewed.
                row["gain_rare_ap50_per_1000_boxes"] = mean_ci([
                    1000 * (runs[s][eval_key]["rare_ap50"] - base[s][eval_key]["rare_ap50"])
                    / runs[s]["acquired"]["boxes_labelled"] for s in paired if runs[s]["acquired"]["boxes_labelled"]])
            row["wall_s"] = mean_ci([r.get("wall_s") for r in runs.values()])
        out[arm] = row
    for arm in ("random+synth", "active+synth"):
        plain = arm.removesuffix("+synth")
        if arm in by_arm and plain in by_arm:
            paired = [s for s in by_arm[arm] if s in by_arm[plain] and eval_key in by_arm[arm][s]
                      and eval_key in by_arm[plain][s]]
            if paired:
                out[arm][f"gain_rare_ap50_over_{plain}"] = mean_ci([by_arm[arm][s][eval_key]["rare_ap50"]
                                                                    - by_arm[plain][s][eval_key]["rare_ap50"]
                                                                    for s in paired])
    # The same budget of reviewed images buys each arm its gain: the ratio of mean gains to random's (issue 11
    # asks active >= 2), and the same per box labelled (active picks crowded images, so a person draws more
    # boxes for it). Oracle buys the most rare boxes any selection can: its ratios are the reference for active's.
    rnd = out.get("random")
    for name in ("active", "oracle", "active/s", "active+hunt"):
        row = out.get(name)
        if not (rnd and row):
            continue
        if rnd["rare_boxes_acquired"]["mean"]:
            out[f"{name}_over_random_rare_boxes"] = round(row["rare_boxes_acquired"]["mean"]
                                                          / rnd["rare_boxes_acquired"]["mean"], 2)
        if rnd["rare_boxes_per_hour"]["mean"] and row["rare_boxes_per_hour"]["mean"] is not None:
            out[f"{name}_over_random_rare_boxes_per_hour"] = round(row["rare_boxes_per_hour"]["mean"]
                                                                   / rnd["rare_boxes_per_hour"]["mean"], 2)
        for key, ratio in (("gain_rare_ap50_over_base", f"{name}_over_random_rare_ap50_gain"),
                           ("gain_rare_ap50_per_1000_boxes", f"{name}_over_random_rare_ap50_gain_per_box"),
                           ("gain_rare_ap50_per_annotator_hour", f"{name}_over_random_rare_ap50_gain_per_hour")):
            if key in rnd and key in row and (rnd[key]["mean"] or 0) > 0 and row[key]["mean"] is not None:
                out[ratio] = round(row[key]["mean"] / rnd[key]["mean"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="PPE-style folder: base/, pool/, val/")
    parser.add_argument("--base-model", type=Path, required=True, help="the deployed model (.pt) to improve")
    parser.add_argument("--budget", type=int, default=150, help="captures a person reviews per arm")
    parser.add_argument("--arms", default="base,random,active",
                        help="comma-separated: base, random, active, random+synth, active+synth, oracle (the "
                             "ceiling: the images with the most rare boxes, picked by reading the answers), and "
                             "active/s (active ranked by value per second, spending the seconds random's reviews of "
                             "the same seed cost under the cost model; list random first), and active+hunt (the "
                             "rare-class pass: yes/no questions about likely rare boxes, full reviews of the yes "
                             "frames, in batches, spending random's seconds)")
    parser.add_argument("--synthetic", type=int, default=150, help="swap images the +synth arms add")
    parser.add_argument("--rounds", type=int, default=1,
                        help="active arms push their budget in this many rounds (review cycles), pulling the "
                             "reviews between")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (selection and training)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--rare-class", default="no_helmet", help="the class whose improvement is measured")
    parser.add_argument("--out", type=Path, required=True, help="work folder (resumable)")
    parser.add_argument("--eval-data", type=Path, help="also evaluate the saved models on this YOLO folder")
    parser.add_argument("--acquire-only", action="store_true", help="stop after review: acquisition only")
    recipe = parser.add_argument_group("training recipe", "default: the recipe from before (every class alike, one "
                                       "threshold at 0.25); rare: the rare-aware recipe, each lever switchable")
    recipe.add_argument("--recipe", choices=("default", "rare"), default="default")
    recipe.add_argument("--repeat-t", type=float, default=1.0, help="repeat-factor sampling's threshold t")
    recipe.add_argument("--no-repeat", action="store_true", help="no repeat-factor sampling")
    recipe.add_argument("--class-weights", type=float, default=0.0, help="ultralytics' cls_pw (0: off)")
    recipe.add_argument("--min-rare-px", type=float, default=32.0,
                        help="train at the size where the rare class's median box is this many pixels a side")
    recipe.add_argument("--no-resolution", action="store_true", help="train at --imgsz, not a size from the data")
    recipe.add_argument("--copy-paste", type=float, default=0.0,
                        help="pasted images per training image holding the rare class (box-level copy-paste)")
    recipe.add_argument("--calibration-share", type=float, default=0.15,
                        help="share of real training images carved for checkpoint choice and thresholds")
    recipe.add_argument("--no-calibration", action="store_true",
                        help="no calibration split: last epoch, one threshold")
    recipe.add_argument("--no-rare-checkpoint", action="store_true", help="the last epoch, not the rare-best one")
    recipe.add_argument("--operating-precision", type=float, default=0.5,
                        help="the precision each class's threshold is chosen for")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    known = ("base", "random", "active", "oracle", "random+synth", "active+synth", "active/s", "active+hunt")
    if bad := [a for a in arms if a not in known]:
        parser.error(f"--arms: unknown arm(s) {bad}; choose from {', '.join(known)}")
    if not 1 <= args.rounds <= args.budget:
        parser.error(f"--rounds {args.rounds}: must be between 1 and --budget ({args.budget})")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for path, what in ((args.data / "pool" / "images", "--data"), (args.base_model, "--base-model")):
        if not path.exists():
            parser.error(f"{what}: {path} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)

    from ultralytics import YOLO

    model_names = YOLO(str(args.base_model)).names
    names = [model_names[k] for k in sorted(model_names)]
    if args.rare_class not in names:
        parser.error(f"--rare-class {args.rare_class!r} is not one of the model's classes {names}")
    started = time.perf_counter()
    captures = edge_captures(args.data, args.base_model, args.imgsz, args.out / "shared", args.rare_class)
    results = []
    # Seed-major, so that a partial run already compares every arm on the same seeds.
    for seed in seeds:
        for arm in arms:
            results.append(run_one(args, arm, seed, captures, names))
            run = run_dir(args, arm, seed)
            if args.eval_data and (run / "best.pt").exists():
                results[-1]["eval"] = judge(run / "best.pt", args.eval_data, run / f"metrics_{args.eval_data.name}.json",
                                            args.rare_class, (results[-1].get("training") or {}).get("thresholds"))
    summary = {"budget": args.budget, "epochs": args.epochs, "imgsz": args.imgsz, "rare_class": args.rare_class,
               "recipe": recipe_name(args) if args.recipe != "default" else "default",
               "arms": summarise(results, args.rare_class, "val"), "seconds": round(time.perf_counter() - started, 1)}
    if args.eval_data:
        summary["eval_data"] = {"path": str(args.eval_data), "arms": summarise(results, args.rare_class, "eval")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
