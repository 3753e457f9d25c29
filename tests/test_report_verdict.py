"""The verdict rules on hand-made numbers (pure functions: no study, no torch)."""

from __future__ import annotations

import pytest

from automlp.report import verdict as V
from automlp.spec import dump_spec, load_spec, validate_spec_dict


def test_gap_over_threshold_plus_noise_overfits():
    f = V.gap_finding(1.0, 0.80, 0.78, "accuracy", 0.05, se=0.03, n_val=150)
    assert f.status == "overfits"
    assert "gap +0.200" in f.text and "±0.030 on 150 rows" in f.text and "threshold 0.05" in f.text


def test_gap_within_noise_of_threshold_is_not_overfitting():
    f = V.gap_finding(0.90, 0.83, None, "accuracy", 0.05, se=0.04)
    assert f.status == "ok" and "within one standard error" in f.text


def test_gap_under_threshold_is_ok():
    f = V.gap_finding(0.86, 0.84, 0.85, "r2", 0.05)
    assert f.status == "ok" and "gap +0.020" in f.text
    assert "within the threshold 0.05 (validation - test gap: -0.010)." in f.text


def test_curves_still_falling_at_the_cap_underfit():
    curves = {"train_loss": [1.0, 0.8, 0.6, 0.5, 0.4], "val_loss": [1.1, 0.9, 0.7, 0.6, 0.5]}
    f = V.curve_finding(curves, best_epoch=5, n_epochs=5, max_epochs=5, stop_reason="max_epochs", patience=10)
    assert f.status == "underfits" and "still improving when training was cut off" in f.text


def test_curves_name_the_bottom_and_the_stop():
    curves = {"train_loss": [1.0, 0.5, 0.2, 0.1], "val_loss": [1.0, 0.6, 0.7, 0.9]}
    f = V.curve_finding(curves, best_epoch=2, n_epochs=4, max_epochs=100, stop_reason="early_stopping", patience=2)
    assert f.status == "ok"
    assert "bottomed out at epoch 2 (0.6000)" in f.text and "early stopping fired at epoch 4 (patience 2)" in f.text
    assert "+50% off its minimum" in f.text


def test_fit_barely_better_than_constant_underfits():
    assert V.fit_finding(0.40, 0.34, "accuracy").status == "underfits"
    assert V.fit_finding(0.90, 0.34, "accuracy").status == "ok"
    assert V.skill(0.67, 0.34) == pytest.approx(0.5)


def test_stability_moves_more_than_lead_is_unstable():
    f = V.stability_finding([0.90, 0.37, 0.73], lead=0.0, metric="accuracy", runner_up=7, tolerance=0.02)
    assert f.status == "unstable" and "trial #7" in f.text and "0.667 ± 0.271" in f.text


def test_stability_within_the_test_splits_sampling_error_is_not_unstable():
    """30 test rows: one row is 0.033 of accuracy; a seed spread of one row is noise, not instability."""
    scores = [0.867, 0.833, 0.900]
    f = V.stability_finding(scores, lead=0.0, metric="accuracy", runner_up=3, tolerance=0.02, test_se=0.062,
                            n_test=30)
    assert f.status == "ok" and "sampling error (±0.062 on 30 rows)" in f.text
    big = V.stability_finding([0.90, 0.37, 0.73], lead=0.0, metric="accuracy", runner_up=7, tolerance=0.02,
                              test_se=0.062, n_test=30)
    assert big.status == "unstable"


def test_stability_tiny_spread_on_a_tie_is_not_unstable():
    f = V.stability_finding([0.972, 0.978, 0.967], lead=0.0, metric="accuracy", runner_up=3, tolerance=0.02)
    assert f.status == "ok" and "report.stable_spread" in f.text


def test_stability_lead_larger_than_spread_is_ok():
    f = V.stability_finding([0.80, 0.81], lead=0.05, metric="r2", runner_up=1)
    assert f.status == "ok" and "larger than the seed's effect" in f.text
    assert V.stability_finding([0.8], lead=0.05, metric="r2", runner_up=1).status == "info"


def test_capacity_correlation_words():
    assert "larger networks overfit more" in V.capacity_finding(0.8, 0.001, 30).text
    assert "no clear relation" in V.capacity_finding(0.1, 0.6, 30).text
    assert "too few" in V.capacity_finding(None, None, 2).text


def test_overall_verdict_order_and_default():
    ok = V.Finding("gap", "ok", "gap fine")
    assert V.overall_verdict([ok]) == ("fits well", "gap fine")
    findings = [ok, V.Finding("stability", "unstable", "u"), V.Finding("curves", "underfits", "c"),
                V.Finding("gap2", "overfits", "o")]
    assert V.overall_verdict(findings) == ("overfits", "o")
    assert V.overall_verdict(findings[:3]) == ("underfits", "c")


def test_smaller_model_within_noise_is_named():
    top = [{"trial": 3, "value": 0.97, "n_params": 10000}, {"trial": 5, "value": 0.965, "n_params": 2000},
           {"trial": 8, "value": 0.90, "n_params": 500}]
    f = V.smaller_finding(top, noise=0.01, metric="accuracy")
    assert f is not None and "trial #5 has 2,000 parameters (20% of the best's 10,000)" in f.text
    assert V.smaller_finding(top, noise=0.001, metric="accuracy") is None


def test_gap_metric_is_bounded():
    assert [V.gap_metric(m) for m in ("rmse", "mae", "log_loss", "roc_auc")] == ["r2", "r2", "accuracy", "roc_auc"]


@pytest.mark.parametrize("name", ["iris", "digits", "breast_cancer", "auto_mpg", "mnist"])
def test_dump_spec_round_trips(name):
    from pathlib import Path

    spec = load_spec(Path(__file__).parent.parent / "search_spaces" / f"{name}.yaml")
    again = validate_spec_dict(dump_spec(spec))
    assert again == spec
    assert again.report.seeds == 3 and again.report.rescore_top == 5 and again.report.use_rescored_choice is False
