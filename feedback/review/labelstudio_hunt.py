"""The rare-class pass in Label Studio: a project per hunted class whose tasks show a frame with one box drawn and
ask yes / no / not sure. Built on the review adapter's client, timeouts and error handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from feedback.review.hunt import Answer, Question, Verdict
from feedback.review.labelstudio import (
    IMAGE, LABEL, PAGE_SIZE, LabelStudioReviewer, _time, deciding_annotation, prediction,
)
from feedback.review.workflow import ReviewConfigError

VERDICT = "verdict"
ANSWERS: dict[str, Answer] = {"yes": "yes", "no": "no", "not sure": "unsure"}


def hunt_config(class_name: str) -> str:
    """The frame, the box asked about (as a prediction) and one required choice."""
    choices = "".join(f"<Choice value={quoteattr(a)}/>" for a in ANSWERS)
    return (f"<View><Header value={quoteattr(f'Is the boxed object {class_name}?')}/>"
            f'<Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
            f'<RectangleLabels name="{LABEL}" toName="{IMAGE}" canRotate="false"><Label value={quoteattr(class_name)}/>'
            f'</RectangleLabels><Choices name="{VERDICT}" toName="{IMAGE}" choice="single" required="true" '
            f'showInline="true">{choices}</Choices></View>')


class LabelStudioHunt:
    """Questions as Label Studio tasks; a skipped task counts as "not sure" (the frame gets a full review)."""

    name = "label-studio"
    shows_images = True

    def __init__(self, reviewer: LabelStudioReviewer) -> None:
        self.ls = reviewer

    def ensure_hunt_project(self, title: str, class_name: str) -> str:
        if (found := self.ls.project_titled(title)) is not None:
            if ((found.parsed_label_config or {}).get(VERDICT) or {}).get("type") != "Choices":
                raise ReviewConfigError(f"project {found.id} at {self.ls.url} ({title!r}) asks no {VERDICT!r} "
                                        "choice: it is not an edgeloop hunt project; rename it")
            return str(found.id)
        with self.ls._calling(f"create project {title!r}"):
            project = self.ls._client.projects.create(title=title, label_config=hunt_config(class_name),
                                             description=f"One box per task: is it {class_name}? Yes, no, not sure.")
        return str(project.id)

    def push_hunt(self, project: str | None, questions: Sequence[Question], class_name: str) -> list[str]:
        """One task per question (a question asked before keeps its task); task ids in question order."""
        assert project is not None
        existing = self.ls.task_ids_by_capture(project, key="hunt")
        new = [q for q in questions if q.ref not in existing]
        if new:
            tasks = [{"data": {IMAGE: q.item.image_url, "capture_id": q.item.capture_id, "hunt": q.ref},
                      # prediction() names a box by its class id's place in a class list: only that place matters
                      "predictions": [prediction(q.item, [class_name] * (q.class_id + 1))]} for q in new]
            with self.ls._calling(f"import {len(tasks)} hunt tasks into project {project}"):
                answer = self.ls._client.projects.import_tasks(int(project), request=tasks, return_task_ids=True,
                                                               request_options={"max_retries": 0})
            existing.update({q.ref: str(i) for q, i in zip(new, getattr(answer, "task_ids", None) or [],
                                                             strict=True)})
        return [existing[q.ref] for q in questions]

    def pull_hunt(self, project: str | None, asked: Sequence[tuple[str, Question]]) -> list[Verdict]:
        assert project is not None
        wanted = {task_id: q for task_id, q in asked}
        verdicts, seen = [], set()
        with self.ls._calling(f"list the tasks of project {project}"):
            listed = [t.model_dump(mode="python") for t in
                      self.ls._client.tasks.list(project=int(project), fields="all", page_size=PAGE_SIZE)]
        for task in listed:
            task_id = str(task["id"])
            seen.add(task_id)
            if task_id not in wanted or (annotation := deciding_annotation(task.get("annotations") or [])) is None:
                continue
            lead = annotation.get("lead_time")
            verdicts.append(Verdict(wanted[task_id].ref, task_id, _answer(annotation),
                                    annotator=self.ls._annotator(annotation.get("completed_by")),
                                    lead_time_s=float(lead) if lead is not None else None,
                                    updated_at=_time(annotation)))
        verdicts += [Verdict(q.ref, task_id, "cancelled") for task_id, q in wanted.items() if task_id not in seen]
        return verdicts


def _answer(annotation: dict[str, Any]) -> Answer:
    if annotation.get("was_cancelled"):
        return "unsure"
    for region in annotation.get("result") or []:
        if region.get("from_name") == VERDICT:
            chosen = (region.get("value") or {}).get("choices") or []
            if len(chosen) == 1 and chosen[0] in ANSWERS:
                return ANSWERS[chosen[0]]
    return "unsure"  # submitted without a choice: a person could not tell
