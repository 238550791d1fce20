"""Hard-example mining on the device: decides which frames are worth uploading, and why.

Triggers (uncertainty, flicker, operator, rare_class, random) propose frames; an hourly budget and a
perceptual-hash dedup thin them (`thinning`). A class the model carries its own threshold for has its
bands placed at that threshold (DESIGN decision 9).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from edge.detectors.postprocess import class_evidence
from edge.protocol import Trigger
from edge.thinning import RollingRank, TokenBucket, dhash, hamming

# A person asking beats everything; the model's own doubts beat the blind sample.
PRIORITY: dict[Trigger, int] = {"operator": 3, "flicker": 2, "uncertainty": 2, "rare_class": 2, "random": 1}
TRIGGERS: tuple[Trigger, ...] = ("operator", "flicker", "uncertainty", "rare_class", "random")

_MAX_REASON_ITEMS = 5
_MAX_NOTE_CHARS = 2_000  # what CaptureMeta.note accepts; the note travels with the upload


@dataclass
class TriggerConfig:
    """What makes a frame a hard example, and how many of them the device may send."""

    uncertainty_band: tuple[float, float] = (0.25, 0.6)
    """A detection with `low <= confidence < high` is one the model is unsure about. `low` is
    meant to be the detector's operating threshold: the band is the confidences just above it."""
    flicker_min_hits: int = 3
    """A track must have been seen (with a confirmed id) on this many frames to count..."""
    flicker_max_age: int = 5
    """...and flickers when it vanishes having lived at most this many frames; a track also
    flickers when its class changes between frames."""
    random_rate: float = 0.01
    """Share of frames sampled regardless of the model, for an unbiased view of the stream."""
    watch_classes: tuple[int, ...] = ()
    """Class ids of the rare classes to look out for; empty turns the rare_class trigger off."""
    rare_band: tuple[float, float] = (0.001, 0.25)
    """A frame whose evidence for a watched class (its maximum score over the frame, before the
    detector's threshold) lies in `low <= evidence < high` fires rare_class: the model almost
    saw that class. `high` is meant to be the detector's operating threshold."""
    rare_top: float = 0.05
    """...and when at most this share of the last `rare_window` frames had more evidence for it.
    A model that never predicts a class gives it faint evidence everywhere (on PPE, no_helmet's
    band fires on 86% of frames): ranking against the recent stream keeps the frames where it
    came closest. 1.0 turns the ranking off (the band alone)."""
    rare_window: int = 3000
    """How many recent frames the ranking looks back over (about two minutes at 25 fps)."""
    budget_per_hour: float | None = 120.0
    """Uploads per hour (token bucket refilling continuously). Operator flags are exempt. None: no budget
    (a video file or image folder someone chose to run: every selected frame goes)."""
    budget_burst: int = 5
    """Bucket size: how many uploads may go out back to back after a quiet spell."""
    dedup_hamming: int = 6
    """A frame whose 64-bit dHash is within this Hamming distance of a recent upload is a duplicate."""
    dedup_memory: int = 256
    """How many recent uploads are remembered for dedup; 0 turns dedup off."""
    uncertainty_enabled: bool = True
    flicker_enabled: bool = True
    operator_enabled: bool = True
    random_enabled: bool = True
    uncertainty_band_per_class: bool = True
    """A class with its own threshold in the running model gets its own uncertainty band: from that
    threshold, as wide as `uncertainty_band` (see `class_uncertainty_band`). False: `uncertainty_band`
    for every class."""
    rare_band_per_class: bool = True
    """A watched class with its own threshold gets its own rare band: from `rare_band`'s low up to
    that threshold (see `class_rare_band`). False: `rare_band` for every class, as when a person set
    the band explicitly (`edgeloop agent --rare-band`)."""

    def __post_init__(self) -> None:
        low, high = self.uncertainty_band
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"uncertainty_band {self.uncertainty_band} must satisfy 0 <= low < high <= 1")
        low, high = self.rare_band
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"rare_band {self.rare_band} must satisfy 0 <= low < high <= 1")
        if not 0.0 < self.rare_top <= 1.0 or self.rare_window < 1:
            raise ValueError(f"rare_top {self.rare_top} must lie in (0, 1] and rare_window {self.rare_window} be >= 1")
        if bad := [c for c in self.watch_classes if c < 0]:
            raise ValueError(f"watch_classes must be class ids >= 0, got {bad}")
        if not 0.0 <= self.random_rate <= 1.0:
            raise ValueError(f"random_rate {self.random_rate} must lie in [0, 1]")
        if self.flicker_min_hits < 1 or self.flicker_max_age < self.flicker_min_hits:
            raise ValueError("flicker needs 1 <= flicker_min_hits <= flicker_max_age")
        if (self.budget_per_hour is not None and self.budget_per_hour < 0) or self.budget_burst < 1:
            raise ValueError("budget_per_hour must be >= 0 and budget_burst >= 1")
        if not 0 <= self.dedup_hamming <= 64 or self.dedup_memory < 0:
            raise ValueError("dedup_hamming must lie in [0, 64] and dedup_memory be >= 0")


@dataclass(frozen=True)
class Decision:
    """Upload this frame: which triggers fired, how urgent it is, and why (for the logs).

    `frame_bgr`, `detections` and `frame_index` are those of the frame to upload, which for a
    vanished track is the frame before the one just observed (see `HardExampleMiner`).
    """

    triggers: list[Trigger]
    priority: int
    reasons: list[str]
    frame_index: int
    frame_bgr: np.ndarray = field(repr=False)
    detections: sv.Detections = field(repr=False)
    note: str | None = None
    """What the operator wrote when flagging, if anything."""


def class_uncertainty_band(band: tuple[float, float], threshold: float) -> tuple[float, float]:
    """The uncertainty band of a class whose operating threshold is `threshold`: the configured band
    moved to start there (it starts at the global threshold), as wide, ending at 1 at the most."""
    low, high = band
    return threshold, min(1.0, threshold + (high - low))


def class_rare_band(band: tuple[float, float], threshold: float) -> tuple[float, float]:
    """The rare band of a class whose operating threshold is `threshold`: the configured band's low
    up to the threshold, which is where the class would get a box. Empty when the threshold lies
    at or below `low`: then no evidence is "almost" a box."""
    return band[0], threshold


def _band(band: tuple[float, float]) -> str:
    """A class's own band for a reason: 4 digits, since a threshold plus a width needs rounding."""
    return f"[{band[0]:.4g}, {band[1]:.4g})"


@dataclass
class _Track:
    first_seen: int
    hits: int
    class_id: int
    class_label: str
    reported: bool = False  # one flicker per track: an oscillating class must not fire every frame


@dataclass(frozen=True)
class _Frame:
    index: int
    image: np.ndarray
    detections: sv.Detections


class HardExampleMiner:
    """Looks at every tracked frame and returns a `Decision` when one should be uploaded.

    Which frame a flicker uploads: a class change is seen on the current frame, which shows
    the object with its new class, so that frame goes. A vanish is only known on the first
    frame *without* the track; the frame worth reviewing is the one before, which still
    carries the short-lived box (a false positive, or an object the model is about to lose).
    Tracks are dropped on their first absent frame, so that frame is always the previous
    `observe` call's and one remembered frame suffices (kept by reference: callers must not
    overwrite a frame in place after passing it here).

    One call returns at most one Decision. When the previous frame's flicker and the current
    frame's triggers come together, the higher priority wins; on a tie the flicker does,
    because an unsure detection will usually still be unsure on the next frame, while a
    vanished track is gone. The loser is counted as `superseded`.

    Operator flags bypass the budget and the dedup (a person asked); the rest are subject
    to both. Duplicates are checked first, so they never spend budget.
    """

    def __init__(
        self,
        config: TriggerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        names: Mapping[int, str] | None = None,
        thresholds: Mapping[int, float] | None = None,
    ) -> None:
        self.config = config or TriggerConfig()
        cfg = self.config
        self._names = dict(names or {})  # the model's class names, for rare_class reasons
        self._thresholds: dict[int, float] = dict(thresholds or {})
        self._rng = random.Random(seed)
        self._bucket: TokenBucket | None = None
        if cfg.budget_per_hour is not None:
            capacity = float(cfg.budget_burst) if cfg.budget_per_hour > 0 else 0.0
            self._bucket = TokenBucket(cfg.budget_per_hour / 3600.0, capacity, clock)
        self._recent_hashes: deque[int] = deque(maxlen=cfg.dedup_memory)
        ranked = cfg.watch_classes if cfg.rare_top < 1.0 else ()  # at 1.0 no frame can rank out: nothing to keep
        self._evidence = {c: RollingRank(cfg.rare_window) for c in ranked}
        self._tracks: dict[int, _Track] = {}
        self._previous: _Frame | None = None
        self._lock = threading.Lock()  # guards the flag (set from the operator endpoint) and the counters
        self._flagged = False
        self._flag_note: str | None = None
        self._fired: dict[Trigger, int] = dict.fromkeys(TRIGGERS, 0)
        self._counts = {"uploaded": 0, "suppressed_by_budget": 0, "suppressed_as_duplicate": 0, "superseded": 0}

    def set_thresholds(self, thresholds: Mapping[int, float]) -> None:
        """The running model's per-class thresholds (class id -> confidence; empty: none): the bands
        follow them from the next observed frame. The agent calls this whenever it swaps models."""
        self._thresholds = dict(thresholds)  # one reference swap: observe() reads either map, never half of one

    def uncertainty_band_of(self, class_id: int) -> tuple[float, float]:
        """The uncertainty band that applies to class `class_id` now."""
        band = self.config.uncertainty_band
        threshold = self._thresholds.get(class_id) if self.config.uncertainty_band_per_class else None
        return band if threshold is None else class_uncertainty_band(band, threshold)

    def rare_band_of(self, class_id: int) -> tuple[float, float]:
        """The rare band that applies to class `class_id` now."""
        band = self.config.rare_band
        threshold = self._thresholds.get(class_id) if self.config.rare_band_per_class else None
        return band if threshold is None else class_rare_band(band, threshold)

    def flag(self, note: str | None = None) -> None:
        """An operator says the current frame is wrong: the next observed frame is uploaded."""
        with self._lock:
            self._flagged = True
            if note:
                self._flag_note = note[:_MAX_NOTE_CHARS]

    def observe(self, frame_bgr: np.ndarray, detections: sv.Detections, frame_index: int) -> Decision | None:
        """Runs every trigger on one tracked frame; returns what to upload, if anything."""
        cfg = self.config
        # Drawn on every frame, enabled or not, so the sample depends only on seed and frame count.
        lucky = self._rng.random() < cfg.random_rate
        with self._lock:
            flagged, note = self._flagged, self._flag_note
            self._flagged, self._flag_note = False, None

        now: list[tuple[Trigger, str]] = []
        if flagged and cfg.operator_enabled:
            now.append(("operator", f"operator flagged frame {frame_index}" + (f": {note}" if note else "")))
        changed, vanished = self._follow_tracks(detections, frame_index)
        if cfg.flicker_enabled and changed:
            now.append(("flicker", "class changed: " + "; ".join(changed[:_MAX_REASON_ITEMS])))
        if cfg.uncertainty_enabled and (unsure := self._unsure(detections)):
            items = ", ".join(unsure[:_MAX_REASON_ITEMS])
            low, high = cfg.uncertainty_band
            where = "each class's band" if self._per_class(cfg.uncertainty_band_per_class) else f"[{low}, {high})"
            now.append(("uncertainty", f"{len(unsure)} detection(s) in {where}: {items}"))
        if cfg.watch_classes and (almost := self._almost_seen(detections)):
            low, high = cfg.rare_band
            where = "each class's band" if self._per_class(cfg.rare_band_per_class) else f"[{low}, {high})"
            now.append(("rare_class", f"evidence in {where}: " + ", ".join(almost[:_MAX_REASON_ITEMS])))
        if lucky and cfg.random_enabled:
            now.append(("random", f"random sample at rate {cfg.random_rate}"))

        current = _Frame(frame_index, frame_bgr, detections)
        previous, self._previous = self._previous, current
        before: list[tuple[Trigger, str]] = []
        if cfg.flicker_enabled and vanished and previous is not None:
            before.append(("flicker", "track vanished young: " + "; ".join(vanished[:_MAX_REASON_ITEMS])))

        with self._lock:
            for trigger, _ in now + before:
                self._fired[trigger] += 1
        candidates = []
        if before and previous is not None:
            candidates.append(_decide(before, previous, None))
        if now:
            candidates.append(_decide(now, current, note if flagged and cfg.operator_enabled else None))
        if not candidates:
            return None
        best = max(candidates, key=lambda d: d.priority)  # max keeps the first on a tie: the flicker
        if len(candidates) > 1:
            self._count("superseded")
        return self._admit(best)

    def stats(self) -> dict[str, object]:
        """Counters since start: triggers fired, uploads admitted, and why others were not."""
        with self._lock:
            return {"fired": dict(self._fired), **self._counts}

    def _admit(self, decision: Decision) -> Decision | None:
        """Applies dedup and budget (both skipped for operator flags); remembers what goes out."""
        cfg = self.config
        operator = "operator" in decision.triggers
        bucket = None if operator else self._bucket  # None: nothing to spend (an operator flag, or no budget)
        # An empty budget is checked before hashing: on a busy camera most candidates end
        # here, and the hash is the costliest step of the miner.
        if bucket is not None and bucket.tokens() < 1.0:
            self._count("suppressed_by_budget")
            return None
        frame_hash = dhash(decision.frame_bgr) if cfg.dedup_memory else None
        if not operator:
            if frame_hash is not None and any(hamming(frame_hash, h) <= cfg.dedup_hamming for h in self._recent_hashes):
                self._count("suppressed_as_duplicate")  # duplicates never spend budget
                return None
            if bucket is not None and not bucket.take():
                self._count("suppressed_by_budget")
                return None
        if frame_hash is not None:
            self._recent_hashes.append(frame_hash)
        self._count("uploaded")
        return decision

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _per_class(self, enabled: bool) -> bool:
        """Whether per-class bands are in effect now (reasons then name each item's band)."""
        return enabled and bool(self._thresholds)

    def _unsure(self, detections: sv.Detections) -> list[str]:
        if detections.confidence is None or len(detections) == 0:
            return []
        conf = detections.confidence
        if not self._per_class(self.config.uncertainty_band_per_class):
            low, high = self.config.uncertainty_band
            return [f"{_label(detections, i)} {conf[i]:.2f}" for i in np.flatnonzero((conf >= low) & (conf < high))]
        classes = detections.class_id if detections.class_id is not None else np.zeros(len(detections), dtype=int)
        bands = [self.uncertainty_band_of(int(c)) for c in classes]
        return [f"{_label(detections, i)} {conf[i]:.2f} in {_band(band)}"
                for i, band in enumerate(bands) if band[0] <= conf[i] < band[1]]

    def _almost_seen(self, detections: sv.Detections) -> list[str]:
        """Watched classes whose evidence on this frame lies in the rare band, as "name 0.0123"."""
        evidence = class_evidence(detections)
        if evidence is None:
            return []
        cfg = self.config
        per_class = self._per_class(cfg.rare_band_per_class)
        almost = []
        for c in cfg.watch_classes:
            if c >= len(evidence):
                continue
            value = float(evidence[c])
            rank = self._evidence.get(c)
            above = rank.share_above(value) if rank is not None else 0.0  # every frame counts, in the band or not
            low, high = band = self.rare_band_of(c)
            if low <= value < high and above <= cfg.rare_top:
                item = f"{self._names.get(c, f'class {c}')} {value:.4g}"
                almost.append(f"{item} in {_band(band)}" if per_class else item)
        return almost

    def _follow_tracks(self, detections: sv.Detections, frame_index: int) -> tuple[list[str], list[str]]:
        """Updates the live tracks; returns reasons for class changes now and young vanished tracks."""
        cfg = self.config
        changed: list[str] = []
        seen: set[int] = set()
        ids = detections.tracker_id if detections.tracker_id is not None else np.full(len(detections), -1)
        classes = detections.class_id if detections.class_id is not None else np.zeros(len(detections), dtype=int)
        for i, tid in enumerate(ids.tolist()):
            if tid < 0 or tid in seen:  # -1: not a confirmed track yet
                continue
            seen.add(tid)
            cls, label = int(classes[i]), _label(detections, i)
            track = self._tracks.get(tid)
            if track is None:
                self._tracks[tid] = _Track(first_seen=frame_index, hits=1, class_id=cls, class_label=label)
                continue
            track.hits += 1
            if cls != track.class_id:
                if not track.reported:
                    changed.append(f"track {tid} {track.class_label} -> {label}")
                    track.reported = True
                track.class_id, track.class_label = cls, label
        vanished: list[str] = []
        for tid in [t for t in self._tracks if t not in seen]:
            # Dropped on the first absent frame: this keeps memory to the live tracks, and a
            # track that returns later starts afresh (a second short life is flicker too).
            track = self._tracks.pop(tid)
            last_seen = self._previous.index if self._previous is not None else track.first_seen
            lifetime = last_seen - track.first_seen + 1
            if not track.reported and track.hits >= cfg.flicker_min_hits and lifetime <= cfg.flicker_max_age:
                vanished.append(f"track {tid} {track.class_label} lived {lifetime} frames")
        return changed, vanished


def _decide(fired: list[tuple[Trigger, str]], frame: _Frame, note: str | None) -> Decision:
    triggers = [t for t in TRIGGERS if any(t == f for f, _ in fired)]  # TRIGGERS is in priority order
    return Decision(
        triggers=triggers,
        priority=max(PRIORITY[t] for t in triggers),
        reasons=[f"{t}: {why}" for t, why in fired],
        frame_index=frame.index,
        frame_bgr=frame.image,
        detections=frame.detections,
        note=note,
    )


def _label(detections: sv.Detections, i: int) -> str:
    names = detections.data.get("class_name")
    if names is not None:
        return str(names[i])
    return f"class {int(detections.class_id[i])}" if detections.class_id is not None else "object"
