"""`edgeloop autolabel DIR`: pre-label a folder of images with a teacher and send them for review.

A thin shell over `feedback.review.autolabel`; the teacher is GroundingDINO (+ SAM) from settings, or the champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from feedback.review.workflow import ReviewError
from flows.cli.common import JsonOpt, WorkspaceOpt, app, emit, fail, open_workspace, ultralytics_to_stderr
from flows.cli.review import LabelsOpt, LsTokenOpt, LsUrlOpt, ProjectOpt, PublicUrlOpt, ReviewerOpt, _reviewer


# The command imports feedback/ where it runs: `import flows.cli` must work on an edge install (no DuckDB) and the
# teachers load supervision, which `import flows.cli` must not.
def _teacher(ws, kind: str, classes: list[str]):  # noqa: ANN001, ANN202
    if kind == "grounding-dino":
        from feedback.teachers.grounding_dino import GroundingDinoTeacher

        return GroundingDinoTeacher.from_settings(ws.settings, classes)
    if kind == "champion":
        from feedback.teachers.port import champion_teacher

        teacher = champion_teacher(ws)
        if teacher is None:
            raise fail("--teacher champion needs a champion model (register one with `edgeloop gate`)")
        return teacher
    raise fail(f"--teacher {kind!r} must be 'grounding-dino' or 'champion'")


@app.command()
def autolabel(
    folder: Annotated[Path, typer.Argument(help="A folder of .jpg/.png images, e.g. a new site's first frames.")],
    teacher: Annotated[str, typer.Option(help="grounding-dino (open vocabulary: the classes' phrases from "
                                              "settings) or champion (the deployed model).")] = "grounding-dino",
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names, when the catalog has none "
                                                        "yet.")] = None,
    camera: Annotated[Optional[str], typer.Option(help="Camera name of the captures (default: the folder's).")] = None,
    reviewer: ReviewerOpt = "label-studio",
    labels: LabelsOpt = None,
    public_url: PublicUrlOpt = None,
    project: ProjectOpt = "edgeloop review",
    label_studio_url: LsUrlOpt = None,
    label_studio_token: LsTokenOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Label every image in FOLDER with a teacher and create review tasks pre-annotated with its boxes.

    Each image becomes a capture (device 'autolabel'), as if a camera had uploaded it; running again on the
    same folder pushes nothing twice.
    """
    from feedback.review.autolabel import autolabel_folder, teacher_classes

    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    ws = open_workspace(workspace)
    chosen = _reviewer(ws.settings, reviewer, labels, label_studio_url, label_studio_token)
    try:
        names = teacher_classes(ws, [c.strip() for c in classes.split(",") if c.strip()] if classes else None)
        with ultralytics_to_stderr():
            labeller = _teacher(ws, teacher, names)
            report = autolabel_folder(ws, folder, labeller, reviewer=chosen, camera=camera, public_url=public_url,
                                      project_title=project)
    except (ReviewError, ValueError, LookupError, OSError) as exc:
        raise fail(str(exc)) from exc
    out = {"images": report.images, "new": report.new, "known": report.known, "unreadable": report.unreadable,
           "boxes": report.boxes, "teacher": labeller.name, "pushed": report.push.pushed if report.push else 0,
           "project": report.push.project if report.push else None}
    emit(out, as_json)
