"""Gate verdicts: clear win, win overall with a regressing class, tie, loss, first model, missing class."""

from __future__ import annotations

from feedback.training.gate import decide


def result(map50_95: float, **per_class_map50: float | None) -> dict:
    return {"map50_95": map50_95, "per_class": {k: {"map50": v} for k, v in per_class_map50.items()}}


CHAMPION = result(0.300, helmet=0.70, no_helmet=0.20, vest=0.60)


def test_clear_win_is_promoted() -> None:
    d = decide(result(0.330, helmet=0.72, no_helmet=0.45, vest=0.61), CHAMPION)
    assert d.promoted and "pass" in d.reasons[0]


def test_win_overall_but_one_class_regresses_is_refused() -> None:
    d = decide(result(0.340, helmet=0.64, no_helmet=0.60, vest=0.61), CHAMPION)
    assert not d.promoted
    assert "helmet AP@0.5 0.6400 vs 0.7000" in d.reasons[1]


def test_a_drop_within_tolerance_is_allowed() -> None:
    assert decide(result(0.310, helmet=0.685, no_helmet=0.30, vest=0.60), CHAMPION).promoted


def test_tie_is_not_enough() -> None:
    d = decide(result(0.302, helmet=0.70, no_helmet=0.20, vest=0.60), CHAMPION)
    assert not d.promoted and "fail" in d.reasons[0]


def test_exactly_the_margin_passes() -> None:
    assert decide(result(0.305, helmet=0.70, no_helmet=0.20, vest=0.60), CHAMPION).promoted


def test_loss_is_refused() -> None:
    assert not decide(result(0.250, helmet=0.71, no_helmet=0.25, vest=0.61), CHAMPION).promoted


def test_classes_without_holdout_instances_cannot_regress() -> None:
    champion = result(0.300, helmet=0.70, no_helmet=None)
    assert decide(result(0.320, helmet=0.70, no_helmet=None), champion).promoted


def test_a_class_missing_from_the_challenger_counts_as_ap_zero() -> None:
    # Better overall, but no result at all for no_helmet: that is a 0.20 drop, not a class to skip.
    d = decide(result(0.340, helmet=0.72, vest=0.61), CHAMPION)
    assert not d.promoted
    assert "no_helmet AP@0.5 missing (AP 0) vs 0.2000 (-0.2000)" in d.reasons[1]


def test_a_missing_class_within_the_tolerance_is_allowed() -> None:
    champion = result(0.300, helmet=0.70, rare=0.01)
    assert decide(result(0.320, helmet=0.70), champion).promoted


def test_a_null_ap_where_the_champion_has_one_counts_as_zero() -> None:
    d = decide(result(0.340, helmet=0.72, no_helmet=None, vest=0.61), CHAMPION)
    assert not d.promoted and "no_helmet AP@0.5 missing (AP 0)" in d.reasons[1]


def test_first_model_is_promoted() -> None:
    d = decide(result(0.1, helmet=0.2), None)
    assert d.promoted and "first model" in d.reasons[0]


def test_margin_and_tolerance_are_configurable() -> None:
    challenger = result(0.303, helmet=0.65, no_helmet=0.20, vest=0.60)
    assert not decide(challenger, CHAMPION).promoted
    assert decide(challenger, CHAMPION, margin=0.001, tolerance=0.06).promoted


def with_recall(res: dict, name: str, recall: float | None, threshold: float = 0.25) -> dict:
    res["per_class"][name] |= {"recall": recall, "threshold": threshold}
    return res


# Dyadic numbers (exact in binary) so that "falls by more than the tolerance" is decided on the rule, not rounding.
def test_a_watched_class_whose_recall_falls_at_its_operating_point_is_refused() -> None:
    champion = with_recall(result(0.25, helmet=0.75, no_helmet=0.25), "no_helmet", 0.5, threshold=0.125)
    challenger = with_recall(result(0.375, helmet=0.75, no_helmet=0.5), "no_helmet", 0.25, threshold=0.25)
    d = decide(challenger, champion, tolerance=0.0625, watched=["no_helmet"])
    assert not d.promoted  # better mAP and AP, but the alert class is seen half as often
    assert "no_helmet recall 0.250 at conf 0.25 vs 0.500 at conf 0.125 (falls)" in d.reasons
    assert decide(challenger, champion, tolerance=0.0625).promoted  # not watched: mAP and AP decide, as before


def test_a_watched_recall_within_tolerance_or_better_passes() -> None:
    champion = with_recall(result(0.25, helmet=0.75, no_helmet=0.25), "no_helmet", 0.5)
    for recall in (0.4375, 0.5, 0.75):  # 0.0625 lower is exactly the tolerance
        challenger = with_recall(result(0.375, helmet=0.75, no_helmet=0.5), "no_helmet", recall, threshold=0.0625)
        d = decide(challenger, champion, tolerance=0.0625, watched=["no_helmet"])
        assert d.promoted, (recall, d.reasons)
    nothing_to_see = with_recall(result(0.25, helmet=0.75, no_helmet=None), "no_helmet", None)
    assert decide(result(0.375, helmet=0.75, no_helmet=None), nothing_to_see, watched=["no_helmet"]).promoted


def test_exactly_the_margin_passes_and_a_hair_below_fails_in_exact_arithmetic() -> None:
    # 0.3125 - 0.25 == 0.0625 exactly in binary floating point, so this tells `>=` from `>`
    # (0.305 - 0.300 is 0.0050000000000000044, which cannot).
    champion = result(0.25, helmet=0.75)
    assert 0.3125 - 0.25 == 0.0625
    assert decide(result(0.3125, helmet=0.75), champion, margin=0.0625).promoted
    below = 0.3125 - 2**-20  # far beyond any rounding, far below anything a reader would call the margin
    assert not decide(result(below, helmet=0.75), champion, margin=0.0625).promoted
