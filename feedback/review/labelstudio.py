"""The Label Studio adapter of the review port: projects, tasks with pre-annotations, finished annotations.

Label Studio keeps boxes in percent of the image with x/y the top-left corner; the catalog in pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import quoteattr

import httpx
import numpy as np
import supervision as sv
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from feedback.review.workflow import PushedTask, ReviewConfigError, ReviewItem, ReviewResult, ReviewServiceError
from store.settings import Settings

# The names the labelling config gives its two tags; results are matched on them.
IMAGE = "image"
LABEL = "label"
PAGE_SIZE = 100


# ----------------------------------------------------------------------------- conversions


def xyxy_to_percent(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) pixel xyxy -> (N, 4) Label Studio x, y, width, height in percent of the image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) / scale * 100.0


def percent_to_xyxy(rects: np.ndarray, width: int, height: int, rotation: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) percent x, y, width, height (+ rotation, degrees) -> (N, 4) pixel xyxy.

    Label Studio turns a rectangle clockwise about its top-left corner; a turned one becomes the
    axis-aligned box around its corners, since the catalog keeps axis-aligned boxes only.
    """
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / 100.0 * np.array([width, height, width, height])
    x, y, w, h = r.T
    theta = np.radians(np.zeros(len(r)) if rotation is None else np.asarray(rotation, dtype=np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    # Corners (0,0), (w,0), (w,h), (0,h) turned about (x, y); y grows downwards, so this is clockwise.
    dx = np.stack([np.zeros_like(w), w, w, np.zeros_like(w)], 1)
    dy = np.stack([np.zeros_like(h), np.zeros_like(h), h, h], 1)
    xs = x[:, None] + dx * cos[:, None] - dy * sin[:, None]
    ys = y[:, None] + dx * sin[:, None] + dy * cos[:, None]
    unturned = theta == 0  # exact arithmetic for the usual case, so round trips are exact
    xs[unturned] = np.stack([x, x + w, x + w, x], 1)[unturned]
    ys[unturned] = np.stack([y, y, y + h, y + h], 1)[unturned]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)


def label_config(classes: Sequence[str]) -> str:
    """An Image with RectangleLabels in the catalog's classes; boxes cannot be turned."""
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (f'<View><Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
            f'<RectangleLabels name="{LABEL}" toName="{IMAGE}" canRotate="false">{labels}</RectangleLabels></View>')


def prediction(item: ReviewItem, classes: Sequence[str]) -> dict[str, Any]:
    """The edge model's detections as a Label Studio prediction (the annotator's starting point)."""
    shown = item.detections
    percent = xyxy_to_percent(shown.xyxy, item.width, item.height)
    regions = []
    for i, (rect, class_id, score) in enumerate(zip(percent, shown.class_id, shown.confidence, strict=True)):
        if not 0 <= class_id < len(classes):
            continue  # a class the catalog does not have cannot be shown; the annotator adds the box if real
        x, y, w, h = map(float, rect)
        regions.append({
            "id": f"p{i}", "from_name": LABEL, "to_name": IMAGE, "type": "rectanglelabels",
            "original_width": item.width, "original_height": item.height, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [classes[int(class_id)]]},
            "score": float(score),
        })
    mean = float(np.mean(shown.confidence)) if len(shown) else 1.0  # nothing seen: sure of nothing to see
    return {"model_version": item.model_version or "unknown", "score": mean, "result": regions}


def annotation_boxes(result: Sequence[dict[str, Any]], classes: Sequence[str], width: int,
                     height: int) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy pixels, class ids) of an annotation's rectangles, clipped to the frame."""
    index = {name: i for i, name in enumerate(classes)}
    rects, turns, class_ids, dims = [], [], [], []
    for region in result:
        if region.get("type") != "rectanglelabels" or region.get("from_name") != LABEL:
            continue  # relations and the like carry no box
        value = region["value"]
        names = value.get("rectanglelabels") or []
        if len(names) != 1 or names[0] not in index:
            raise ReviewConfigError(f"a box is labelled {names}, not one of the catalog's classes {list(classes)}")
        rects.append([value["x"], value["y"], value["width"], value["height"]])
        turns.append(value.get("rotation") or 0.0)
        class_ids.append(index[names[0]])
        dims.append((region.get("original_width") or width, region.get("original_height") or height))
    boxes = np.zeros((0, 4))
    if rects:
        # The percentages are of the image the annotator saw; normally that is the capture itself.
        boxes = np.concatenate([percent_to_xyxy(np.array([r]), w, h, np.array([t]))
                                for r, t, (w, h) in zip(rects, turns, dims, strict=True)])
    boxes = np.clip(boxes, 0, [width, height, width, height])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a box squeezed to nothing by the edge
    return boxes[keep], np.asarray(class_ids, dtype=np.int64).reshape(-1)[keep]


# ----------------------------------------------------------------------------- adapter


class LabelStudioReviewer:
    """People reviewing in Label Studio; every call has a timeout and fails as ReviewServiceError.

    The token must be an owner's or manager's: Label Studio shows an annotator's token only that
    annotator's own annotations.
    """

    name = "label-studio"
    shows_images = True

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0, retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # The SDK retries refused connections and 5xx answers with a backoff; imports never (see push).
        self._client = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s, max_retries=retries)
        self._users: dict[int, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> LabelStudioReviewer:
        s = settings or Settings()
        if not s.label_studio_url or not s.label_studio_token:
            raise ReviewConfigError(
                "Label Studio is not configured: set EDGELOOP_LABEL_STUDIO_URL and EDGELOOP_LABEL_STUDIO_TOKEN "
                "(or label_studio_url and label_studio_token in edgeloop.toml)"
            )
        return cls(s.label_studio_url, s.label_studio_token, **kwargs)

    @contextmanager
    def _calling(self, doing: str) -> Iterator[None]:
        """Turn whatever the SDK raises into one error that names the server and what we were doing."""
        try:
            yield
        except ApiError as exc:
            detail = exc.body.get("detail", exc.body) if isinstance(exc.body, dict) else exc.body
            hint = " (check EDGELOOP_LABEL_STUDIO_TOKEN)" if exc.status_code == 401 else ""
            raise ReviewServiceError(
                f"Label Studio at {self.url} refused to {doing}: HTTP {exc.status_code} {detail}{hint}"
            ) from None
        except httpx.TimeoutException:
            raise ReviewServiceError(
                f"Label Studio at {self.url} did not answer within {self.timeout_s:g} s (trying to {doing})"
            ) from None
        except httpx.HTTPError as exc:
            raise ReviewServiceError(f"Label Studio at {self.url} is unreachable ({exc}) (trying to {doing})") from None
        except ValueError as exc:  # JSON or schema errors: something answered that is not Label Studio's API
            raise ReviewServiceError(
                f"{self.url} did not answer like Label Studio's API ({type(exc).__name__}) (trying to {doing})"
            ) from None

    def ping(self) -> None:
        """One cheap request (a page of one project): an unreachable server or a refused token fails here, in
        one line, before a command spends minutes on work it would then have nowhere to send."""
        with self._calling("list projects"):
            self._client.projects.list(page_size=1)  # the SDK sends the first page's request at once

    # -- projects

    def project_titled(self, title: str) -> Any | None:
        """The one project titled exactly `title`, or None; two of them is an error to fix by hand."""
        with self._calling(f"list projects titled {title!r}"):
            # The title filter matches substrings, case-insensitively: keep exact matches only.
            found = [p for p in self._client.projects.list(title=title, page_size=PAGE_SIZE) if p.title == title]
        if len(found) > 1:
            raise ReviewConfigError(f"Label Studio at {self.url} has {len(found)} projects titled {title!r} "
                                    f"(ids {sorted(p.id for p in found)}): rename all but one")
        return found[0] if found else None

    def ensure_project(self, title: str, classes: Sequence[str]) -> str:
        """The id of the project titled `title`, created if there is none; its labels must be `classes`."""
        if (found := self.project_titled(title)) is not None:
            self.check_project(str(found.id), classes)
            return str(found.id)
        with self._calling(f"create project {title!r}"):
            project = self._client.projects.create(
                title=title, label_config=label_config(classes),
                description="Captures the edge model was unsure or wrong about. Fix the boxes, or skip.",
            )
        return str(project.id)

    def check_project(self, project: str, classes: Sequence[str]) -> None:
        """Refuse a project whose labelling config would not give back boxes in `classes`."""
        with self._calling(f"read project {project}"):
            parsed = self._client.projects.get(int(project)).parsed_label_config or {}
        control = parsed.get(LABEL) or {}
        inputs = control.get("inputs") or [{}]
        shape_ok = (control.get("type") == "RectangleLabels" and control.get("to_name") == [IMAGE]
                    and inputs[0].get("type") == "Image" and inputs[0].get("value") == IMAGE)
        if not shape_ok:
            raise ReviewConfigError(f"project {project} at {self.url} is not an edgeloop project: it needs "
                                    f"RectangleLabels {LABEL!r} on an Image {IMAGE!r} with value ${IMAGE}")
        labels = list(control.get("labels") or [])
        # Labels map back to class ids by name, so the order may differ but the names may not.
        if sorted(labels) != sorted(classes):
            raise ReviewConfigError(f"project {project} at {self.url} labels boxes {labels}, but the catalog's "
                                    f"classes are {list(classes)}: fix its labelling config or use a new project title")

    # -- tasks

    def task_ids_by_capture(self, project: str, key: str = "capture_id") -> dict[str, str]:
        """data[key] (the capture id) -> task id for every task in the project (the oldest task if one was
        imported twice)."""
        found: dict[str, str] = {}
        with self._calling(f"list the tasks of project {project}"):
            for task in self._client.tasks.list(project=int(project), fields="task_only", page_size=PAGE_SIZE):
                ref = (task.data or {}).get(key)
                if ref and (ref not in found or int(found[ref]) > task.id):
                    found[ref] = str(task.id)
        return found

    def push(self, project: str | None, items: Sequence[ReviewItem], classes: Sequence[str]) -> list[str]:
        """Import one task per item with its prediction; task ids in item order.

        A capture that already has a task (a push whose answer was lost) keeps it, so repeating a
        push never duplicates work for annotators.
        """
        assert project is not None, "Label Studio tasks live in a project: call ensure_project first"
        self.check_project(project, classes)
        existing = self.task_ids_by_capture(project)
        new = [item for item in items if item.capture_id not in existing]
        if new:
            tasks = [{"data": {IMAGE: item.image_url, "capture_id": item.capture_id},
                      "predictions": [prediction(item, classes)]} for item in new]
            with self._calling(f"import {len(tasks)} tasks into project {project}"):
                # No retries: a repeated import whose first answer was lost would duplicate tasks.
                answer = self._client.projects.import_tasks(
                    int(project), request=tasks, return_task_ids=True, request_options={"max_retries": 0})
            ids = getattr(answer, "task_ids", None) or []
            if len(ids) != len(new):
                raise ReviewServiceError(f"Label Studio at {self.url} created {len(ids)} of {len(new)} tasks in "
                                         f"project {project}; push again to finish (existing tasks are reused)")
            existing.update({item.capture_id: str(i) for item, i in zip(new, ids, strict=True)})
        return [existing[item.capture_id] for item in items]

    def pull(self, project: str | None, classes: Sequence[str],
             tasks: Sequence[PushedTask] | None = None) -> list[ReviewResult]:
        """Verdicts of the project's finished tasks (of `tasks` only, when given).

        A task counts as finished when it has an annotation. The latest submitted annotation is
        the verdict; if every annotation was skipped (`was_cancelled`), the task is skipped. A task
        in `tasks` that Label Studio no longer has comes back cancelled.
        """
        assert project is not None, "Label Studio tasks live in a project"
        self.check_project(project, classes)
        wanted = {t.task_id: t.item for t in tasks} if tasks is not None else None
        results, seen = [], set()
        with self._calling(f"list the tasks of project {project}"):
            listed = [t.model_dump(mode="python") for t in
                      self._client.tasks.list(project=int(project), fields="all", page_size=PAGE_SIZE)]
        for task in listed:
            task_id = str(task["id"])
            seen.add(task_id)
            if wanted is not None and task_id not in wanted:
                continue
            annotation = deciding_annotation(task.get("annotations") or [])
            if annotation is None:
                continue  # nobody has finished it yet
            capture_id = (task.get("data") or {}).get("capture_id") or (wanted[task_id].capture_id if wanted else "")
            results.append(self._result(task_id, capture_id, annotation, classes,
                                        wanted[task_id] if wanted is not None else None))
        for task_id, item in (wanted or {}).items():
            if task_id not in seen:
                results.append(ReviewResult(task_id, item.capture_id, "cancelled"))
        return results

    def _result(self, task_id: str, capture_id: str, annotation: dict[str, Any], classes: Sequence[str],
                item: ReviewItem | None) -> ReviewResult:
        lead_time = annotation.get("lead_time")
        common = {"annotator": self._annotator(annotation.get("completed_by")),
                  "annotation_id": str(annotation["id"]), "updated_at": _time(annotation),
                  "lead_time_s": float(lead_time) if lead_time is not None else None}
        if annotation.get("was_cancelled"):
            return ReviewResult(task_id, capture_id, "skipped", **common)
        result = annotation.get("result") or []
        width, height = (item.width, item.height) if item else _dims(result)
        try:
            boxes, class_ids = annotation_boxes(result, classes, width, height)
        except ReviewConfigError as exc:
            raise ReviewConfigError(f"task {task_id} (annotation {annotation['id']}): {exc}") from None
        return ReviewResult(task_id, capture_id, "verified", sv.Detections(boxes, class_id=class_ids), **common)

    def _annotator(self, user_id: int | dict | None) -> str | None:
        """The annotator's e-mail (or user name), looked up once per user."""
        if isinstance(user_id, dict):  # some serialisers expand the user
            return user_id.get("email") or user_id.get("username") or str(user_id.get("id"))
        if user_id is None:
            return None
        if user_id not in self._users:
            try:
                with self._calling(f"read user {user_id}"):
                    user = self._client.users.get(int(user_id))
                self._users[user_id] = user.email or user.username or f"label-studio-user:{user_id}"
            except ReviewServiceError:
                # A token that may not read users still gets the verdicts; the id identifies the person.
                self._users[user_id] = f"label-studio-user:{user_id}"
        return self._users[user_id]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def deciding_annotation(annotations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation that decides a task: the latest submitted one, else the latest skip."""
    def latest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(rows, key=lambda a: (_time(a) or _EPOCH, a["id"]), default=None)

    return latest([a for a in annotations if not a.get("was_cancelled")]) or latest(annotations)


def _time(annotation: dict[str, Any]) -> datetime | None:
    t = annotation.get("updated_at") or annotation.get("created_at")
    return datetime.fromisoformat(t) if isinstance(t, str) else t


def _dims(result: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """The image size an annotation's boxes were drawn on, for a task the catalog did not describe."""
    for region in result:
        if region.get("original_width") and region.get("original_height"):
            return int(region["original_width"]), int(region["original_height"])
    if any(region.get("type") == "rectanglelabels" for region in result):
        raise ReviewServiceError("an annotation's boxes do not say the size of the image they were drawn on")
    return 1, 1  # no boxes to size: any size will do
