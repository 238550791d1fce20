"""Review effort: the reviewer's actions on the shown boxes, per class, and their seconds, on planted cases."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.review.effort import CostModel, box_actions, class_seconds, skip_effort, summarise, task_effort

# Shown (the device's pre-annotation): a helmet (0) right, a vest (2) where a package (3) is, a spurious helmet.
SHOWN = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [80, 80, 90, 90]], float)
SHOWN_CLASSES, SHOWN_CONF = np.array([0, 2, 0]), np.array([0.9, 0.6, 0.4])
# Verified: the helmet, the package, and a bare head (1) the model missed.
TRUTH = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], float)
TRUTH_CLASSES = np.array([0, 3, 1])


def test_each_box_is_kept_fixed_drawn_or_deleted_and_counted_for_its_class() -> None:
    actions, by_class = box_actions(TRUTH, TRUTH_CLASSES, SHOWN, SHOWN_CLASSES, SHOWN_CONF)
    assert actions == {"kept": 1, "fixed": 1, "added": 1, "deleted": 1}
    assert by_class == {0: {"kept": 1, "fixed": 0, "added": 0, "deleted": 1},  # the spurious one was a helmet
                        1: {"kept": 0, "fixed": 0, "added": 1, "deleted": 0},
                        3: {"kept": 0, "fixed": 1, "added": 0, "deleted": 0}}


def test_seconds_are_label_studios_where_measured_else_the_cost_models() -> None:
    cost = CostModel.from_settings({"added": 10.0})  # drawing priced up; the rest at the defaults
    modelled = task_effort(TRUTH, TRUTH_CLASSES, SHOWN, SHOWN_CLASSES, SHOWN_CONF, cost, None)
    assert (modelled.source, modelled.seconds) == ("cost_model", 2.0 + 7.0 + 10.0 + 2.0)
    measured = task_effort(TRUTH, TRUTH_CLASSES, SHOWN, SHOWN_CLASSES, SHOWN_CONF, cost, 33.0)
    assert (measured.source, measured.seconds, measured.modelled_s) == ("lead_time", 33.0, 21.0)
    assert skip_effort(cost, None).seconds == 2.0 and skip_effort(cost, 4.5).source == "lead_time"


def test_an_unknown_action_in_the_settings_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown action\(s\) \['draw'\]"):
        CostModel.from_settings({"draw": 5.0})


def test_a_measured_task_shares_its_seconds_out_by_the_cost_models_proportions() -> None:
    cost = CostModel()
    effort = task_effort(TRUTH, TRUTH_CLASSES, SHOWN, SHOWN_CLASSES, SHOWN_CONF, cost, 36.0).as_json()
    # class 0: keep + delete = 4 s of the model's 18; class 1: draw 7; class 3: fix 7. Measured 36 = 2x the model.
    assert class_seconds(effort, cost) == {0: 8.0, 1: 14.0, 3: 14.0}
    summary = summarise([effort, skip_effort(cost, None).as_json()], ["helmet", "no_helmet", "vest", "package"], cost)
    assert summary["seconds"] == 38.0 and summary["tasks"] == 2 and summary["measured_tasks"] == 1
    assert summary["by_class"]["no_helmet"] == {"boxes": 1, "seconds": 14.0, "boxes_per_hour": round(3600 / 38, 1)}
    assert summary["by_class"]["helmet"]["boxes"] == 1  # the deleted one is no verified box
