"""Multi-object tracking for the agent: ByteTrack (from `trackers`) over `sv.Detections`.

Tracker ids let the triggers see flicker and let alerts fire once per object, not per frame.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker


class Tracker:
    """Gives each detection a `tracker_id` that stays the same while the object stays in view.

    A detection not (yet) part of a confirmed track gets `tracker_id == -1`: ByteTrack
    confirms a track after `minimum_consecutive_frames` hits. Every input detection is
    returned, possibly in another order.
    """

    def __init__(
        self,
        *,
        frame_rate: float = 30.0,
        lost_track_buffer: int = 30,
        track_activation_threshold: float = 0.5,
        minimum_consecutive_frames: int = 2,
        minimum_iou_threshold: float = 0.1,
        high_conf_det_threshold: float = 0.6,
    ) -> None:
        # Activation at 0.5 rather than the library's 0.7: objects the model is only
        # moderately sure of must get tracks too, or their flicker could never be seen.
        self._settings = dict(
            lost_track_buffer=lost_track_buffer,
            frame_rate=frame_rate,
            track_activation_threshold=track_activation_threshold,
            minimum_consecutive_frames=minimum_consecutive_frames,
            minimum_iou_threshold=minimum_iou_threshold,
            high_conf_det_threshold=high_conf_det_threshold,
        )
        self._defaults = (track_activation_threshold, high_conf_det_threshold)
        self._bytetrack = ByteTrackTracker(**self._settings)
        # ByteTrack numbers tracks from 0 again after a reset; shifting by the ids already
        # handed out keeps every id unique for the agent's lifetime, so the alerter's memory
        # of "already alerted" can never mistake a new object for an old one.
        self._id_offset = 0
        self._next_id = 0

    def update(self, detections: sv.Detections) -> sv.Detections:
        """Tracks one frame's detections; the result carries `tracker_id` (an int array)."""
        tracked = self._bytetrack.update(detections)
        if tracked.tracker_id is None:  # never seen, but the contract is "always set"
            tracked.tracker_id = np.full(len(tracked), -1, dtype=int)
        confirmed = tracked.tracker_id >= 0
        if confirmed.any():
            tracked.tracker_id = np.where(confirmed, tracked.tracker_id + self._id_offset, -1)
            self._next_id = max(self._next_id, int(tracked.tracker_id.max()) + 1)
        return tracked

    def reset(self) -> None:
        """Forgets every track, e.g. when the source or the model changes; ids stay unique."""
        self._bytetrack.reset()
        self._id_offset = self._next_id

    def follow(self, lowest_threshold: float | None) -> None:
        """Start and keep tracks from the running model's lowest per-class threshold (None: the defaults).

        ByteTrack only starts a track from a detection at or above its activation and high-confidence
        thresholds; a class operating at 0.15 would otherwise never be tracked, so never alerted. Every
        detection the agent hands over already passed its own class's threshold, so each counts as sure."""
        activation, high = self._defaults
        if lowest_threshold is not None:
            activation, high = min(activation, lowest_threshold), min(high, lowest_threshold)
        if (activation, high) == (self._settings["track_activation_threshold"],
                                  self._settings["high_conf_det_threshold"]):
            return
        self._settings.update(track_activation_threshold=activation, high_conf_det_threshold=high)
        self._bytetrack = ByteTrackTracker(**self._settings)
        self._id_offset = self._next_id  # a new tracker numbers from 0 again
