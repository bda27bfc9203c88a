"""Metric functions against oracles and hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import metrics as M


@pytest.fixture
def spend() -> np.ndarray:
    rng = np.random.default_rng(0)
    # Skewed like customer spend: most zero, a long tail.
    return np.where(rng.random(5000) < 0.7, 0.0, rng.lognormal(3, 1, 5000))


def test_mae_rmse_hand_computed():
    actual, predicted = [0.0, 10.0, 4.0], [1.0, 7.0, 4.0]
    assert M.mae(actual, predicted) == pytest.approx(4 / 3)
    assert M.rmse(actual, predicted) == pytest.approx(np.sqrt(10 / 3))


def test_normalized_gini_oracles(spend):
    rng = np.random.default_rng(1)
    assert M.normalized_gini(spend, spend) == pytest.approx(1.0)
    assert M.normalized_gini(spend, 2 * spend + 5) == pytest.approx(1.0)  # only the ranking counts
    assert M.normalized_gini(spend, -spend) == pytest.approx(-1.0)
    assert abs(M.normalized_gini(spend, rng.random(spend.size))) < 0.05


def test_gini_hand_computed():
    # Gains of ranking [3, 1, 0] (perfect): 3/4, 1, 1 -> area (0.75 + 1 + 1 - 0.5) / 3 = 0.75.
    assert M.gini_from_ranking([0.0, 1.0, 3.0], [0.0, 1.0, 3.0]) == pytest.approx(2 * 0.75 - 1)


def test_decile_mape_zero_for_perfect_and_hand_computed(spend):
    assert M.decile_mape(spend, spend) == pytest.approx(0.0)
    # Twice the actual everywhere: every decile is off by 100%.
    assert M.decile_mape(spend, 2 * spend) == pytest.approx(1.0)


def test_decile_mape_is_never_negative_with_refunds():
    actual = np.r_[np.full(10, -5.0), np.full(90, 10.0)]  # the lowest decile nets to refunds
    predicted = np.r_[np.zeros(10), np.full(90, 10.0) + np.arange(90) * 1e-6]
    table = M.decile_table(actual, predicted)
    assert table.loc[10, "actual"] == -50.0 and table.loc[10, "ape"] == pytest.approx(1.0)
    assert M.decile_mape(actual, predicted) == pytest.approx(0.1, abs=1e-4)


def test_decile_table_sizes_with_ties():
    actual = np.arange(25, dtype=float)
    table = M.decile_table(actual, np.zeros(25))  # all tied: still ten non-empty deciles
    assert set(table["customers"]) == {2, 3} and table["customers"].sum() == 25
    assert table["actual"].sum() == pytest.approx(actual.sum())
    assert list(table.index) == list(range(1, 11))


def test_spearman():
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(M.spearman([1, 2, 3], [5, 5, 5]))


def test_churn_scores():
    y = np.array([0, 0, 1, 1])
    assert M.churn_auc(y, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert M.churn_auc(y, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert M.pr_auc(y, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert np.isnan(M.churn_auc([1, 1], [0.2, 0.3]))
    assert M.brier(y, [0, 0, 1, 1]) == 0.0
    assert M.brier(y, [0.5] * 4) == pytest.approx(0.25)
    assert M.log_loss(y, [0.5] * 4) == pytest.approx(np.log(2))


def test_calibration_table_perfectly_calibrated():
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    table = M.calibration_table(y, p)
    assert len(table) == 10
    np.testing.assert_allclose(table["observed_rate"], table["mean_predicted"], atol=0.01)
    assert table["customers"].sum() == p.size


def test_cumulative_gains_endpoints(spend):
    g = M.cumulative_gains(spend, spend)
    assert g["share_actual"].iloc[0] == 0.0
    assert g["share_actual"].iloc[-1] == pytest.approx(1.0)
    assert g["share_actual"].is_monotonic_increasing


def test_spend_metrics_keys_and_totals():
    out = M.spend_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert set(out) == {"mae", "rmse", "gini", "spearman", "decile_mape", "total_predicted", "total_actual"}
    assert out["total_predicted"] == 7.0 and out["total_actual"] == 6.0


@pytest.mark.parametrize(
    "actual, predicted",
    [([], []), ([1.0, 2.0], [1.0]), ([1.0, np.nan], [1.0, 2.0])],
)
def test_bad_inputs_rejected(actual, predicted):
    with pytest.raises(ValueError):
        M.mae(actual, predicted)


def test_churn_labels_must_be_binary():
    with pytest.raises(ValueError, match="0 or 1"):
        M.churn_auc([0, 2], [0.1, 0.2])


def test_accepts_series():
    s = pd.Series([1.0, 2.0, 3.0])
    assert M.mae(s, s) == 0.0
