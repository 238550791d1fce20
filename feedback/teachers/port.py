"""The teacher port: a model that labels generated images which carry no boxes of their own (text-to-image output).

One method, `predict(image) -> sv.Detections`, autodistill-style; `ChampionTeacher` is the deployed model itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from feedback.embeddings.choice import champion_weights
from feedback.synthesis.port import Rejected, SynthesisRequest, SyntheticImage
from store.settings import Workspace

if TYPE_CHECKING:  # the registry imports this module, and `import flows.cli` must not load supervision
    import supervision as sv

TEACHER_CONF = 0.25  # ultralytics' own predict default: boxes a person would call detections


@runtime_checkable
class Teacher(Protocol):
    """`classes[i]` is the project's class `i`; `predict` answers in those ids, xyxy pixels of the image given."""

    name: str
    classes: tuple[str, ...]

    def predict(self, image_bgr: np.ndarray) -> sv.Detections: ...


class ChampionTeacher:
    """A YOLO checkpoint (.pt or ultralytics .onnx), usually the champion, through ultralytics."""

    def __init__(self, weights: Path, *, conf: float = TEACHER_CONF, imgsz: int | None = None) -> None:
        from feedback.evaluation.predict import load_detector  # ultralytics loads only when a teacher is made

        self._detector = load_detector(Path(weights))
        self.name = f"champion:{Path(weights).name}"
        self.classes = self._detector.names
        self.conf, self.imgsz = conf, imgsz

    def predict(self, image_bgr: np.ndarray) -> sv.Detections:
        import supervision as sv

        extra: dict[str, Any] = {"imgsz": self.imgsz} if self.imgsz else {}
        result = self._detector.model.predict(image_bgr, conf=self.conf, verbose=False, save=False, **extra)[0]
        return sv.Detections.from_ultralytics(result)


def champion_teacher(ws: Workspace) -> ChampionTeacher | None:
    """The workspace's champion as teacher, or None while there is no champion."""
    weights = champion_weights(ws)
    return ChampionTeacher(weights) if weights is not None else None


def label_by_teacher(
    teacher: Teacher, image_bgr: np.ndarray, request: SynthesisRequest, lineage: dict[str, Any]
) -> SyntheticImage | Rejected:
    """The image with the teacher's boxes, kept only where the teacher finds the target class."""
    found = teacher.predict(image_bgr)
    class_ids = np.asarray(found.class_id if found.class_id is not None else [], dtype=int)
    confidence = np.asarray(found.confidence if found.confidence is not None else np.ones(len(found)), dtype=float)
    lineage = lineage | {"teacher": teacher.name, "teacher_confidence": [round(float(c), 4) for c in confidence]}
    if not np.any(class_ids == request.target_class):
        target = (
            teacher.classes[request.target_class]
            if request.target_class < len(teacher.classes)
            else request.target_class
        )
        return Rejected(f"teacher found no {target}", lineage)
    return SyntheticImage(
        image=image_bgr, boxes=np.asarray(found.xyxy, float).reshape(-1, 4), class_ids=class_ids, lineage=lineage
    )
