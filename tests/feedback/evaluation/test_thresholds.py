"""Per-class thresholds chosen on planted scores, and precision/recall reported at each class's own."""

from __future__ import annotations

import pytest
import supervision as sv

from feedback.evaluation.evaluate import evaluate_predictions
from feedback.evaluation.operating_point import operating_point
from feedback.evaluation.thresholds import by_class_id, choose_thresholds
from tests.feedback.evaluation.test_metrics import NAMES, dataset, predicted, truth

HELMET, NO_HELMET = 0, 1
# Ten images, one no_helmet head each at (10, 10, 50, 50). Ranked by score, the no_helmet predictions are
# hit, hit, miss, hit, miss, miss, hit, miss, miss (a miss sits where no head is). By hand, cumulative
# precision: 1, 1, .667, .75, .6, .5, .571, .5, .444; recall (of 10): .1, .2, .2, .3, .3, .3, .4, .4, .4.
HEAD, ELSEWHERE = (10.0, 10.0, 50.0, 50.0), (300.0, 300.0, 340.0, 340.0)
PLANTED = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False), (0.4, False), (0.3, True),
           (0.2, False), (0.1, False)]
TRUTHS = {f"i{k}": truth((NO_HELMET, HEAD)) for k in range(10)}
PREDICTIONS = {f"i{k}": predicted((NO_HELMET, score, HEAD if hit else ELSEWHERE))
               for k, (score, hit) in enumerate(PLANTED)}


@pytest.mark.parametrize(("target", "threshold", "precision", "recall"), [
    (0.6, 0.6, 0.75, 0.3),  # 0.5 reaches 0.6 too, but sees no more: the higher cut keeps fewer false boxes
    (0.75, 0.6, 0.75, 0.3),
    (0.55, 0.3, 4 / 7, 0.4),  # further down, 0.571 >= 0.55 again: the most recall wins
    (1.0, 0.8, 1.0, 0.2),
])
def test_an_alert_class_gets_the_most_recall_its_target_precision_allows(target: float, threshold: float,
                                                                         precision: float, recall: float) -> None:
    chosen = choose_thresholds(TRUTHS, PREDICTIONS, NAMES, target)
    point = chosen["no_helmet"]
    assert point.threshold == pytest.approx(threshold)
    assert point.precision == pytest.approx(precision) and point.recall == pytest.approx(recall)
    assert point.instances == 10 and point.reached
    assert set(chosen) == {"no_helmet"}  # helmet and vest have no ground truth here: nothing to choose on


def test_other_classes_get_the_best_f1_at_the_target_precision_or_above() -> None:
    # Four heads; ranked: hit, hit, hit, miss, miss, miss, hit. Cutting at 0.3 sees all four at precision 4/7
    # (F1 0.73); cutting at 0.7 sees three at precision 1 (F1 0.86).
    truths = {f"h{k}": truth((HELMET, HEAD)) for k in range(4)}
    found = {f"h{k}": predicted((HELMET, score, HEAD)) for k, score in enumerate((0.9, 0.8, 0.7, 0.3))}
    found |= {f"x{k}": predicted((HELMET, score, ELSEWHERE)) for k, score in enumerate((0.6, 0.5, 0.4))}
    truths |= {f"x{k}": truth() for k in range(3)}
    as_alert = choose_thresholds(truths, found, NAMES, 0.5)["helmet"]
    as_other = choose_thresholds(truths, found, NAMES, 0.5, alert_classes=["no_helmet"])["helmet"]
    assert (as_alert.threshold, as_alert.recall) == (pytest.approx(0.3), 1.0)
    assert (as_other.threshold, as_other.recall, as_other.precision) == (pytest.approx(0.7), 0.75, 1.0)


def test_a_target_no_cut_reaches_falls_back_to_the_best_f1_and_says_so() -> None:
    # Every helmet prediction misses except the lowest: precision tops out at 1/3.
    truths = {"a": truth((HELMET, HEAD))}
    found = {"a": predicted((HELMET, 0.9, ELSEWHERE), (HELMET, 0.8, (100, 0, 140, 40)), (HELMET, 0.4, HEAD))}
    point = choose_thresholds(truths, found, NAMES, 0.5)["helmet"]
    assert not point.reached
    assert point.threshold == pytest.approx(0.4) and point.recall == 1.0 and point.precision == pytest.approx(1 / 3)


def test_tied_scores_are_never_split() -> None:
    # Two boxes at 0.7, one right one wrong: a cut keeps both or neither, so the best it can do for 0.75 is 0.9.
    truths = {"a": truth((NO_HELMET, HEAD), (NO_HELMET, (100, 100, 140, 140)))}
    found = {"a": predicted((NO_HELMET, 0.9, (100, 100, 140, 140)), (NO_HELMET, 0.7, HEAD),
                            (NO_HELMET, 0.7, ELSEWHERE))}
    assert choose_thresholds(truths, found, NAMES, 0.75)["no_helmet"].threshold == pytest.approx(0.9)
    assert choose_thresholds(truths, found, NAMES, 0.6)["no_helmet"].threshold == pytest.approx(0.7)


def test_per_class_targets_and_bad_targets() -> None:
    chosen = choose_thresholds(TRUTHS, PREDICTIONS, NAMES, {"no_helmet": 0.75})
    assert chosen["no_helmet"].threshold == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no_helmet"):
        choose_thresholds(TRUTHS, PREDICTIONS, NAMES, {"no_helmet": 0.0})


def test_each_class_is_matched_at_its_own_threshold() -> None:
    truths = {"a": truth((HELMET, (100, 100, 140, 140)), (NO_HELMET, HEAD))}
    found = {"a": predicted((HELMET, 0.2, (100, 100, 140, 140)), (NO_HELMET, 0.1, HEAD))}
    # One global 0.25: both missed. Own thresholds: no_helmet's 0.08 keeps its 0.1 box; helmet's 0.3 drops 0.2.
    assert operating_point(truths, found, 3).true_positives.tolist() == [0, 0, 0]
    point = operating_point(truths, found, 3, confidence={HELMET: 0.3, NO_HELMET: 0.08})
    assert point.true_positives.tolist() == [0, 1, 0]
    # A class without a threshold of its own keeps the default 0.25: helmet's 0.2 still dropped.
    assert operating_point(truths, found, 3, confidence={NO_HELMET: 0.08}).true_positives.tolist() == [0, 1, 0]


def test_evaluation_reports_recall_at_each_class_s_own_threshold() -> None:
    data = dataset(TRUTHS)
    at_default = evaluate_predictions(data, PREDICTIONS)
    own = evaluate_predictions(data, PREDICTIONS, thresholds={"no_helmet": 0.6})
    assert at_default["per_class"]["no_helmet"]["recall"] == pytest.approx(0.4)  # 0.9, 0.8, 0.6, 0.3 of ten
    assert at_default["per_class"]["no_helmet"]["precision"] == pytest.approx(4 / 7)
    assert own["per_class"]["no_helmet"]["recall"] == pytest.approx(0.3)
    assert own["per_class"]["no_helmet"]["precision"] == pytest.approx(0.75)
    assert own["per_class"]["no_helmet"]["threshold"] == 0.6 and own["per_class"]["helmet"]["threshold"] == 0.25
    assert own["operating_point"]["thresholds"] == {"no_helmet": 0.6}
    assert own["map50"] == at_default["map50"]  # mAP never depends on the operating point


def test_thresholds_by_name_become_class_ids() -> None:
    assert by_class_id({"vest": 0.4, "no_helmet": 0.1, "unknown": 0.2}, NAMES) == {2: 0.4, 1: 0.1}
    assert by_class_id(None, NAMES) == {}
