"""The `paste` generator (offline): verified target-class crops put into verified real frames, clear of their boxes.

Sizes and places follow the cluster's attributes; the background's verified labels carry over, so a frame with
no verified label never becomes a background (material holds verified frames only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from feedback.synthesis.compose.composite import Box, box_size, grown
from feedback.synthesis.compose.look import Look, look_from_attributes
from feedback.synthesis.compose.swap import MaterialError, donors_of, transplant
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage

NO_PLACE = "no_free_place"


@dataclass
class PasteGenerator:
    """Paste one target-class crop per image (up to `max_objects`) where its patch meets no verified box.

    Size: `rel_size` from the attributes (sqrt of box area over frame area, log-normal spread), else the
    donor's own relative size with a x0.8-1.25 jitter; the donor keeps its aspect ratio. Place: anywhere,
    or near the frame's `edge` or `centre` when the cluster says so. Lighting and blur from the attributes
    apply to the pasted object only, so every pixel outside its patch stays the background's.
    """

    name: str = "paste"
    margin: float = 0.15
    feather: float = 1.0
    gap: float = 0.05  # extra clearance around verified boxes, share of the frame's shorter side
    min_px: float = 8.0
    max_objects: int = 1
    attempts: int = 40  # placements tried per image before it is rejected as NO_PLACE
    colour_match: bool = True

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        target = request.target_class
        donors = donors_of(material, target, self.min_px)
        if not donors:
            raise MaterialError(f"no verified box of class {target} at least {self.min_px:g} px in the material: "
                                "paste copies the target class only from the workspace's own verified labels")
        if not material:
            raise MaterialError("no verified frame to paste into")
        look = look_from_attributes(request.attributes)
        rng = np.random.default_rng(request.seed)
        for index in range(request.count):
            frame = material[int(rng.integers(len(material)))]
            want = int(rng.integers(1, self.max_objects + 1))
            placed: list[tuple[Box, LabelledFrame, Box]] = []
            blocked = [tuple(map(float, b)) for b in frame.boxes]
            for _ in range(self.attempts):
                if len(placed) >= want:
                    break
                donor = donors[int(rng.integers(len(donors)))]
                source = material[donor.frame]
                src: Box = tuple(float(v) for v in source.boxes[donor.box])  # type: ignore[assignment]
                dst = self._place(frame, source, src, look, rng)
                if dst is not None and self._clear(frame, dst, blocked):
                    placed.append((dst, source, src))
                    blocked.append(grown(dst, self.margin))
            if not placed:
                yield Rejected(NO_PLACE, {"generator": self.name, "index": index, "source_image": frame.image_sha256,
                                          "detail": f"no clear place in {self.attempts} tries"})
                continue
            yield self._paste(frame, placed, target, look, rng)

    def _place(self, frame: LabelledFrame, source: LabelledFrame, src: Box, look: Look,
               rng: np.random.Generator) -> Box | None:
        """A destination box for the donor: its aspect, a size from the look (or its own), a place from the look."""
        fh, fw = frame.image.shape[:2]
        sw, sh = box_size(src)
        if look.rel_size is not None:
            rel = look.rel_size * float(np.exp(rng.normal(0.0, look.rel_size_spread)))
        else:
            oh, ow = source.image.shape[:2]
            rel = np.sqrt(sw * sh / (ow * oh)) * float(rng.uniform(0.8, 1.25))
        scale = rel * np.sqrt(fw * fh / (sw * sh))
        w, h = sw * scale, sh * scale
        if min(w, h) < self.min_px:
            return None
        mx, my = w * (1 + 2 * self.margin), h * (1 + 2 * self.margin)  # the whole patch stays in the frame
        if mx >= fw or my >= fh:
            return None
        if look.position == "edge":  # the patch touches the outer fifth of the frame
            band = rng.integers(4)
            u, v = rng.uniform(0, 1), rng.uniform(0, 0.2)
            cx, cy = [(u, v), (u, 1 - v), (v, u), (1 - v, u)][band]
        elif look.position == "centre":
            cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        else:
            cx, cy = rng.uniform(0, 1), rng.uniform(0, 1)
        x = float(np.clip(cx * fw, mx / 2, fw - mx / 2)) - w / 2
        y = float(np.clip(cy * fh, my / 2, fh - my / 2)) - h / 2
        return (x, y, x + w, y + h)

    def _clear(self, frame: LabelledFrame, dst: Box, blocked: list[Box]) -> bool:
        """Whether the patch, with `gap` of clearance, meets none of the `blocked` boxes."""
        g = self.gap * min(frame.image.shape[:2])
        x1, y1, x2, y2 = grown(dst, self.margin)
        return all(x2 + g <= b[0] or b[2] + g <= x1 or y2 + g <= b[1] or b[3] + g <= y1 for b in blocked)

    def _paste(self, frame: LabelledFrame, placed: list[tuple[Box, LabelledFrame, Box]], target: int, look: Look,
               rng: np.random.Generator) -> SyntheticImage:
        image = frame.image
        edits, regions = [], []
        for dst, source, src in placed:
            image, patch, applied = transplant(image, source.image, src, dst, look, rng, margin=self.margin,
                                               feather=self.feather, colour_match=self.colour_match)
            edits.append({"box": [round(v, 2) for v in dst], "to_class": target, "donor_image": source.image_sha256,
                          "donor_box": [round(v, 2) for v in src],
                          "scale": round(box_size(dst)[0] / box_size(src)[0], 4), **applied})
            regions.append(list(patch.rect))
        n = len(frame.boxes)
        return SyntheticImage(
            image=image,
            boxes=np.concatenate([frame.boxes.astype(np.float64).reshape(-1, 4), np.array([p[0] for p in placed])]),
            class_ids=np.concatenate([frame.class_ids.astype(np.int64), np.full(len(placed), target, np.int64)]),
            lineage={"generator": self.name, "model": None, "source_image": frame.image_sha256, "edits": edits,
                     "new_boxes": list(range(n, n + len(placed))), "changed_regions": regions},
        )
