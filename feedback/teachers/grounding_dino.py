"""The open-vocabulary teacher: GroundingDINO finds the project's classes by phrase, SAM optionally tightens each box.

An `Ontology` maps the phrases the model understands to the project's class ids (autodistill's caption ontology);
`GroundingDinoTeacher.predict` answers in those ids, so it stands in for the champion wherever a teacher is asked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # the registry imports this module, and `import flows.cli` must not load supervision
    import supervision as sv

NMS_IOU = 0.5  # GroundingDINO answers the same object from several queries


@dataclass(frozen=True)
class Ontology:
    """Phrase i asks for project class `class_ids[i]`; several phrases may ask for one class."""

    phrases: tuple[str, ...]
    class_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        bad = [p for p in self.phrases if not p.strip() or "." in p]
        if bad or len(self.phrases) != len(self.class_ids) or not self.phrases:
            raise ValueError(f"phrases must be non-empty, one per class id and free of '.' (the caption's separator): "
                             f"{list(self.phrases)} for {list(self.class_ids)}")

    @classmethod
    def of(cls, classes: Sequence[str], class_phrases: Mapping[str, Sequence[str]] | None = None) -> Ontology:
        """Every class by its configured phrases, or by its name in words ("no_helmet" -> "no helmet")."""
        unknown = sorted(set(class_phrases or {}) - set(classes))
        if unknown:
            raise ValueError(f"class_phrases names {unknown}, not among the classes {list(classes)}")
        pairs = [(p.strip().lower(), i) for i, name in enumerate(classes)
                 for p in ((class_phrases or {}).get(name) or [name.replace("_", " ")])]
        return cls(tuple(p for p, _ in pairs), tuple(i for _, i in pairs))

    @property
    def caption(self) -> str:
        return ". ".join(self.phrases) + "."


def phrase_spans(tokenizer: Any, ontology: Ontology) -> list[list[int]]:
    """For each phrase, the positions of its tokens in the tokenized caption (found by character offsets)."""
    encoded = tokenizer(ontology.caption, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    spans, start = [], 0
    for phrase in ontology.phrases:
        end = start + len(phrase)
        spans.append([t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end])
        start = end + 2  # ". "
    if any(not s for s in spans):
        raise ValueError(f"a phrase of {list(ontology.phrases)} has no tokens in the model's vocabulary")
    return spans


def tight_box(mask: np.ndarray) -> np.ndarray | None:
    """xyxy pixel edges around a mask's pixels (x2, y2 one past the last), or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def _from_pretrained(loader: Any, source: str | Path, **kwargs: Any) -> Any:
    local = Path(source).expanduser()
    offline = local.is_dir() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return loader.from_pretrained(str(local) if local.is_dir() else str(source), local_files_only=offline, **kwargs)


class GroundingDinoTeacher:
    """GroundingDINO (`transformers` zero-shot object detection) over the ontology's caption, SAM refinement optional.

    A box is kept when its best phrase's strongest token passes `box_threshold` and the phrase's tokens on
    average pass `text_threshold`; its class is that phrase's. With SAM each kept box becomes the tight box of
    its mask (the mask is kept in `Detections.mask`); an empty mask leaves the box as it was.
    """

    def __init__(self, model: Any, processor: Any, classes: Sequence[str], ontology: Ontology, *,
                 box_threshold: float = 0.35, text_threshold: float = 0.25, sam: Any = None,
                 sam_processor: Any = None, name: str | None = None) -> None:
        if (sam is None) != (sam_processor is None):
            raise ValueError("SAM refinement needs both the SAM model and its processor")
        if max(ontology.class_ids) >= len(classes):
            raise ValueError(f"the ontology asks for class {max(ontology.class_ids)} of only {len(classes)}")
        self.model, self.processor, self.sam, self.sam_processor = model.eval(), processor, sam, sam_processor
        self.classes, self.ontology = tuple(classes), ontology
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.spans = phrase_spans(processor.tokenizer, ontology)
        base = name or f"grounding-dino:{getattr(model, 'name_or_path', '') or 'model'}"
        self.name = base + ("+sam" if sam is not None else "")

    @classmethod
    def from_settings(cls, settings: Any, classes: Sequence[str]) -> GroundingDinoTeacher:
        """The configured GroundingDINO (and SAM) from a saved folder or a hub id, on the GPU when there is one."""
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, SamModel, SamProcessor

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = _from_pretrained(AutoModelForZeroShotObjectDetection, settings.grounding_model).to(device)
        processor = _from_pretrained(AutoProcessor, settings.grounding_model)
        sam = sam_processor = None
        if settings.sam_model:
            sam = _from_pretrained(SamModel, settings.sam_model).to(device).eval()
            sam_processor = _from_pretrained(SamProcessor, settings.sam_model)
        return cls(model, processor, classes, Ontology.of(classes, settings.class_phrases),
                   box_threshold=settings.grounding_box_threshold, text_threshold=settings.grounding_text_threshold,
                   sam=sam, sam_processor=sam_processor)

    def predict(self, image_bgr: np.ndarray) -> sv.Detections:
        import supervision as sv
        import torch
        from PIL import Image

        h, w = image_bgr.shape[:2]
        pil = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        inputs = self.processor(images=pil, text=self.ontology.caption, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            out = self.model(**inputs)
        probs = out.logits[0].sigmoid().float().cpu().numpy()  # (queries, text positions)
        peak = np.stack([probs[:, s].max(axis=1) for s in self.spans], axis=1)  # (queries, phrases)
        mean = np.stack([probs[:, s].mean(axis=1) for s in self.spans], axis=1)
        best = mean.argmax(axis=1)
        rows = np.arange(len(best))
        keep = (peak[rows, best] > self.box_threshold) & (mean[rows, best] > self.text_threshold)
        cxcywh = out.pred_boxes[0].float().cpu().numpy()[keep]
        xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
        xyxy = np.clip(xyxy * [w, h, w, h], 0, [w, h, w, h]).reshape(-1, 4)
        phrase = best[keep]
        found = sv.Detections(
            xyxy=xyxy.astype(float), confidence=peak[rows, best][keep].astype(float),
            class_id=np.asarray(self.ontology.class_ids, int)[phrase],
            data={"phrase": np.asarray(self.ontology.phrases, dtype=object)[phrase]},
        )  # fmt: skip
        found = found[(found.xyxy[:, 2] > found.xyxy[:, 0]) & (found.xyxy[:, 3] > found.xyxy[:, 1])]
        if len(found):
            found = found.with_nms(threshold=NMS_IOU, class_agnostic=False)
        if self.sam is not None and len(found):
            found = self._refine(pil, found)
        return found

    def _refine(self, pil: Any, found: sv.Detections) -> sv.Detections:
        import supervision as sv
        import torch

        inputs = self.sam_processor(pil, input_boxes=[found.xyxy.tolist()], return_tensors="pt").to(self.sam.device)
        with torch.no_grad():
            out = self.sam(**inputs, multimask_output=False)
        masks = self.sam_processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0][:, 0]
        masks = masks.numpy().astype(bool)
        boxes = found.xyxy.copy()
        for i, mask in enumerate(masks):
            tight = tight_box(mask)
            if tight is not None:
                boxes[i] = tight
        return sv.Detections(xyxy=boxes, confidence=found.confidence, class_id=found.class_id, mask=masks,
                             data=found.data)
