"""The classic BTYD diagnostics against hand-computed values and a simulation of the model itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.btyd import BGNBDParams, bgnbd_expected_purchases, bgnbd_probability_alive
from training import diagnostics as D
from training import plots

PARAMS = BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5)


def test_frequency_recency_matrix_agrees_with_the_model_and_orders_customers():
    expected = D.frequency_recency_matrix(PARAMS, T=30.0, max_frequency=5, t=26.0, n_recency=7)
    alive = D.frequency_recency_matrix(PARAMS, T=30.0, max_frequency=5, n_recency=7)
    assert expected.shape == (6, 7) and alive.shape == (6, 7)
    assert expected.loc[3, 15.0] == pytest.approx(float(bgnbd_expected_purchases(PARAMS, 26.0, [3], [15.0], [30.0])[0]))
    assert alive.loc[3, 15.0] == pytest.approx(float(bgnbd_probability_alive(PARAMS, [3], [15.0], [30.0])[0]))
    # Row x = 0 is one customer type whatever the column; for x > 0 a later last purchase means more alive.
    assert np.allclose(alive.loc[0], 1.0) and np.ptp(expected.loc[0].to_numpy()) == 0
    assert (np.diff(alive.loc[1:].to_numpy(), axis=1) >= 0).all()
    assert (np.diff(expected.loc[1:].to_numpy(), axis=1) >= 0).all()
    with pytest.raises(ValueError, match="T > 0"):
        D.frequency_recency_matrix(PARAMS, T=0.0, max_frequency=3)


def test_calibration_holdout_table_pools_and_averages():
    index = pd.Index(["a", "b", "c", "d"], name="customer_id")
    summary = pd.DataFrame({"frequency": [0, 0, 2, 9], "recency": [0, 0, 10, 20], "T": [30, 30, 30, 30]}, index=index, dtype=float)
    holdout = pd.Series([0, 1, 3, 5], index=index)
    got = D.calibration_holdout_table(summary, holdout, PARAMS, t=26.0, max_frequency=3)
    assert got.index.tolist() == ["0", "1", "2", "3+"]
    assert got["customers"].tolist() == [2, 0, 1, 1]
    assert got.loc["0", "actual"] == 0.5 and got.loc["3+", "actual"] == 5.0
    assert np.isnan(got.loc["1", "actual"])
    want = bgnbd_expected_purchases(PARAMS, 26.0, [9.0], [20.0], [30.0])[0]
    assert got.loc["3+", "predicted"] == pytest.approx(want)
    with pytest.raises(ValueError, match="one customer index"):
        D.calibration_holdout_table(summary, holdout.iloc[:3], PARAMS, t=26.0)


def _simulate_bgnbd(params: BGNBDParams, n: int, first_days: np.ndarray, end_day: int, rng) -> pd.DataFrame:
    """Purchases of BG/NBD customers (days, time unit 1 day), first purchase on ``first_days``."""
    rows = []
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    for i in range(n):
        t = float(first_days[i])
        rows.append((i, t))
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > end_day:
                break
            rows.append((i, t))
            if rng.random() < p[i]:
                break
    frame = pd.DataFrame(rows, columns=["owner", "day"])
    base = pd.Timestamp("2023-01-01")
    return pd.DataFrame(
        {
            "customer_id": pd.array([f"C{o:05d}" for o in frame["owner"]], dtype="str"),
            "timestamp": base + pd.to_timedelta(np.floor(frame["day"]), unit="D"),
            "amount": 10.0,
        }
    )


def test_transaction_tracking_follows_a_simulation_of_the_model():
    # Rates per day; customers join over 60 days; the model's expectation must track the simulated
    # repeat purchase days (same-day purchases are one day, a small effect at these rates).
    params = BGNBDParams(r=2.0, alpha=40.0, a=1.5, b=6.0)
    rng = np.random.default_rng(11)
    n = 4000
    tx = _simulate_bgnbd(params, n, rng.integers(0, 60, n), end_day=364, rng=rng)
    got = D.transaction_tracking(tx, params, cutoff="2023-06-30", end="2023-12-31", time_unit_days=1.0, period_days=28)
    assert got["holdout"].iloc[0] == np.False_ and got["holdout"].iloc[-1] == np.True_
    total_actual, total_expected = got["actual"].sum(), got["expected"].sum()
    assert total_actual > 1000
    # 4,000 customers' gamma-distributed rates vary the total by a few percent between seeds (3-8 %
    # over seeds 11-13), and same-day purchases merge into one day (~2 %); a wrong dropout parameter
    # is far outside that.
    assert total_expected == pytest.approx(total_actual, rel=0.06)
    wrong = D.transaction_tracking(tx, params.__class__(r=2.0, alpha=40.0, a=1.5, b=3.0), cutoff="2023-06-30",
                                   end="2023-12-31", time_unit_days=1.0, period_days=28)
    assert wrong["expected"].sum() < 0.8 * total_actual
    assert np.allclose(got["actual_cumulative"], got["actual"].cumsum())
    figure = plots.tracking_plot(got)
    assert len(figure.axes) == 2 and figure.axes[0].get_lines()


def test_the_diagnostic_figures_draw():
    expected = D.frequency_recency_matrix(PARAMS, T=30.0, max_frequency=5, t=26.0)
    alive = D.frequency_recency_matrix(PARAMS, T=30.0, max_frequency=5)
    assert len(plots.frequency_recency_plot(expected, alive, horizon_label="26 weeks").axes) == 4  # 2 panels + 2 bars
    index = pd.Index(["a", "b"], name="customer_id")
    summary = pd.DataFrame({"frequency": [0.0, 2.0], "recency": [0.0, 5.0], "T": [10.0, 10.0]}, index=index)
    table = D.calibration_holdout_table(summary, pd.Series([0, 2], index=index), PARAMS, t=10.0)
    assert plots.calibration_holdout_plot(table).axes[0].get_lines()
