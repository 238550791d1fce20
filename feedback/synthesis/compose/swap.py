"""The `swap` generator (offline, CPU, the default): a confusable object in a verified frame becomes the target class.

A verified crop of the target class is scaled onto the confusable instance's box, colour-matched to the place
and feathered in; that box's class changes, every other verified box carries over.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from feedback.synthesis.compose.composite import (
    Box, Patch, blend, box_size, colour_transfer, lab_stats, neighbourhood, patch_rect, warp_patch,
)
from feedback.synthesis.compose.look import Look, apply_look, look_from_attributes
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage


class MaterialError(ValueError):
    """The verified material cannot make what was asked; the message says what is missing."""


@dataclass(frozen=True, order=True)
class _Instance:
    frame: int
    box: int


def rect_overlap(rect: tuple[int, int, int, int] | Box, box: Box) -> float:
    """Share of `box`'s area inside `rect`."""
    w, h = box_size(box)
    ix = max(0.0, min(rect[2], box[2]) - max(rect[0], box[0]))
    iy = max(0.0, min(rect[3], box[3]) - max(rect[1], box[1]))
    return ix * iy / (w * h) if w * h > 0 else 1.0


def contains(outer: Box, inner: Box, share: float = 0.9) -> bool:
    """Whether at least `share` of `inner`'s area lies inside `outer`."""
    return rect_overlap(outer, inner) >= share


def donors_of(material: Sequence[LabelledFrame], target: int, min_px: float) -> list[_Instance]:
    """Every verified target-class box at least `min_px` on each side, in material order."""
    return [_Instance(f, b) for f, frame in enumerate(material) for b, (c, box) in
            enumerate(zip(frame.class_ids, frame.boxes, strict=True))
            if int(c) == target and min(box_size(tuple(box))) >= min_px]


def transplant(image: np.ndarray, source: np.ndarray, src: Box, dst: Box, look: Look, rng: np.random.Generator, *,
               margin: float, feather: float, colour_match: bool) -> tuple[np.ndarray, Patch, dict[str, float]]:
    """A donor crop (`src` of `source`) carried onto `dst` of `image`, the step swap and paste share: warped with
    `margin` of its surroundings feathered over `feather`, colour-matched to where it lands, given the cluster's
    look, blended in. The new image, the patch (its rect is the region changed) and what the look applied."""
    patch = warp_patch(source, src, dst, image.shape, margin=margin, feather=feather)
    pixels = patch.pixels
    if colour_match:
        pixels = colour_transfer(pixels, lab_stats(neighbourhood(source, src)), lab_stats(neighbourhood(image, dst)))
    pixels, applied = apply_look(pixels, look, box_size(dst)[1], rng)
    return blend(image, replace(patch, pixels=pixels)), patch, applied


@dataclass
class SwapGenerator:
    """Replace up to `max_swaps` confusable instances per image with target-class crops.

    A donor fits an instance when their aspect ratios differ by at most `max_aspect_change` and the
    donor is not scaled up more than `max_upscale`; its box is stretched onto the instance's box, so the
    new box is exactly the old one. `margin` of the donor's surroundings comes along, feathered over
    `feather` of it; the patch may cover at most `max_cover` of any other verified box.
    """

    name: str = "swap"
    margin: float = 0.15
    feather: float = 1.0
    max_aspect_change: float = 1.35
    max_upscale: float = 4.0
    min_px: float = 8.0
    max_swaps: int = 2
    max_cover: float = 0.25
    colour_match: bool = True

    def generate(self, request: SynthesisRequest,
                 material: Sequence[LabelledFrame]) -> Iterator[SyntheticImage | Rejected]:
        target = request.target_class
        confusable = set(request.confusable_classes) - {target}
        if not confusable:
            raise MaterialError(f"swap needs confusable classes to replace with class {target}; the request has "
                                f"{list(request.confusable_classes)}")
        donors = donors_of(material, target, self.min_px)
        if not donors:
            raise MaterialError(f"no verified box of class {target} at least {self.min_px:g} px in the material: "
                                "swap copies the target class only from the workspace's own verified labels")
        fits = self._fits(material, donors, confusable)
        instances = sorted(fits)
        if not instances:
            raise MaterialError(f"no verified box of classes {sorted(confusable)} fits a class-{target} crop "
                                f"(aspect within x{self.max_aspect_change:g}, upscale at most x{self.max_upscale:g})")
        look = look_from_attributes(request.attributes)
        rng = np.random.default_rng(request.seed)
        used: set[tuple[_Instance, _Instance]] = set()
        made = 0
        # Every draw is one step of the seeded generator, so the output depends only on seed and material.
        # An (instance, donor) pair is used once: the same object at the same place would be a duplicate.
        for _ in range(request.count * 20):
            if made >= request.count:
                return
            first = instances[int(rng.integers(len(instances)))]
            picks = []
            for inst in self._choose(material, first, fits, rng):
                free = [d for d in fits[inst] if (inst, d) not in used]
                if free:
                    picks.append((inst, free[int(rng.integers(len(free)))]))
            if not picks:
                continue
            used.update(picks)
            made += 1
            yield self._swap(material, picks, target, look, rng)

    def _fits(self, material: Sequence[LabelledFrame], donors: list[_Instance],
              confusable: set[int]) -> dict[_Instance, list[_Instance]]:
        """For each confusable instance that can be replaced, the donors that fit it."""
        donor_boxes = np.array([material[d.frame].boxes[d.box] for d in donors], np.float64).reshape(-1, 4)
        dw, dh = donor_boxes[:, 2] - donor_boxes[:, 0], donor_boxes[:, 3] - donor_boxes[:, 1]
        donor_ids = [(d.frame, d.box) for d in donors]
        fits: dict[_Instance, list[_Instance]] = {}
        for f, frame in enumerate(material):
            for b, (c, box) in enumerate(zip(frame.class_ids, frame.boxes, strict=True)):
                w, h = box_size(tuple(box))
                if int(c) not in confusable or min(w, h) < self.min_px or not self._clear(frame, b):
                    continue
                ok = ((np.abs(np.log((w / h) / (dw / dh))) <= np.log(self.max_aspect_change))
                      & (w / dw <= self.max_upscale) & (h / dh <= self.max_upscale))
                chosen = [donors[i] for i in np.flatnonzero(ok) if donor_ids[i] != (f, b)]
                if chosen:
                    fits[_Instance(f, b)] = chosen
        return fits

    def _clear(self, frame: LabelledFrame, b: int) -> bool:
        """Whether the patch for box `b` leaves every other verified box at least (1 - max_cover) visible.

        A box around box `b` (the worker whose head it is) is part of the same object and exempt.
        """
        box = tuple(frame.boxes[b])
        rect = patch_rect(box, self.margin, frame.image.shape)
        return all(rect_overlap(rect, tuple(other)) <= self.max_cover or contains(tuple(other), box)
                   for k, other in enumerate(frame.boxes) if k != b)

    def _choose(self, material: Sequence[LabelledFrame], first: _Instance, fits: dict[_Instance, list[_Instance]],
                rng: np.random.Generator) -> list[_Instance]:
        """`first` and up to max_swaps - 1 more replaceable instances of its frame whose patches don't meet."""
        frame = material[first.frame]

        def rect(i: _Instance) -> tuple[int, int, int, int]:
            return patch_rect(tuple(frame.boxes[i.box]), self.margin, frame.image.shape)

        chosen = [first]
        want = int(rng.integers(1, self.max_swaps + 1))
        others = [i for i in fits if i.frame == first.frame and i != first]
        for k in rng.permutation(len(others)):
            if len(chosen) >= want:
                break
            if all(rect_overlap(rect(c), rect(others[k])) == 0 for c in chosen):
                chosen.append(others[k])
        return sorted(chosen, key=lambda i: i.box)

    def _swap(self, material: Sequence[LabelledFrame], picks: list[tuple[_Instance, _Instance]], target: int,
              look: Look, rng: np.random.Generator) -> SyntheticImage:
        frame = material[picks[0][0].frame]
        image = frame.image
        class_ids = frame.class_ids.astype(np.int64).copy()
        edits, regions = [], []
        for inst, donor in picks:
            dst: Box = tuple(float(v) for v in frame.boxes[inst.box])  # type: ignore[assignment]
            source = material[donor.frame]
            src: Box = tuple(float(v) for v in source.boxes[donor.box])  # type: ignore[assignment]
            image, patch, applied = transplant(image, source.image, src, dst, look, rng, margin=self.margin,
                                               feather=self.feather, colour_match=self.colour_match)
            edits.append({"box_index": inst.box, "box": [round(v, 2) for v in dst],
                          "from_class": int(class_ids[inst.box]), "to_class": target,
                          "donor_image": source.image_sha256, "donor_box": [round(v, 2) for v in src],
                          "scale": [round(box_size(dst)[0] / box_size(src)[0], 4),
                                    round(box_size(dst)[1] / box_size(src)[1], 4)], **applied})
            regions.append(list(patch.rect))
            class_ids[inst.box] = target
        return SyntheticImage(
            image=image, boxes=frame.boxes.astype(np.float64).copy(), class_ids=class_ids,
            lineage={"generator": self.name, "model": None, "source_image": frame.image_sha256, "edits": edits,
                     "new_boxes": [inst.box for inst, _ in picks], "changed_regions": regions},
        )
