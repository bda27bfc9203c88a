"""BG/NBD and Gamma-Gamma: hand-computed summaries, closed forms against direct integration and
simulation, recovery of known parameters, and the published CDNOW fits and holdout baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import betaln, gammaln

from features import btyd
from features.btyd import bgnbd
from features.btyd import (
    BGNBDParams,
    GammaGammaParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    btyd_summary,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
    summary_from_transactions,
)
from features.contract import Tables
from features.history import prepare_history

CDNOW_PARAMS = BGNBDParams(r=0.252, alpha=4.789, a=0.723, b=2.161)  # lifetimes 0.11.3, cutoff 1997-09-30
CDNOW_GG = GammaGammaParams(p=6.275, q=3.624, v=14.984)
SOME_PARAMS = [BGNBDParams(r=0.25, alpha=4.8, a=0.72, b=2.16), BGNBDParams(r=1.5, alpha=10.0, a=1.6, b=4.0)]


def simulate_bgnbd(params: BGNBDParams, T: np.ndarray, horizon: float, rng: np.random.Generator):
    """Draw (x, t_x) over (0, T] and the purchase count over (T, T + horizon] from the BG/NBD story.

    A customer buys at Poisson rate lambda ~ Gamma(r, alpha) and drops out right after a repeat
    purchase with probability p ~ Beta(a, b), so the drop-out purchase J is geometric in p. Given
    n arrivals in (0, T], they are uniform order statistics: the x-th is T * Beta(x, n - x + 1).
    """
    n = T.size
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    drop_at = rng.geometric(p)
    n_cal = rng.poisson(lam * T)
    x = np.minimum(drop_at, n_cal)
    tx = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(n_cal - x + 1, 1)), 0.0)
    alive = drop_at > n_cal
    future = np.where(alive, np.minimum(rng.poisson(lam * horizon), drop_at - n_cal), 0)
    return x.astype(float), tx, future


def expected_purchases_by_integration(params: BGNBDParams, t, x, tx, T) -> float:
    """E[Y(t) | x, t_x, T] by integrating over the posterior of (lambda, p), without any 2F1.

    An active customer with (lambda, p) makes (1 - exp(-lambda p t)) / p purchases in t on average
    (eq. 7 of Fader, Hardie & Lee 2005). Integrating lambda out in closed form leaves a 1-d integral
    over p, done by quad with the Beta weight p^(a-1) (1-p)^(b-1) handled exactly.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b

    def integrand(p):
        if p == 0.0:
            return (r + x) * t / (alpha + T)
        return (1 - p) ** x * -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + p * t))) / p

    value, _ = integrate.quad(integrand, 0.0, 1.0, weight="alg", wvar=(a - 1, b - 1), epsabs=0, epsrel=1e-10)
    log_numerator = (
        gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T) - betaln(a, b) + np.log(value)
    )
    return float(np.exp(log_numerator - bgnbd_log_likelihood(params, [x], [tx], [T])[0]))


# --------------------------------------------------------------------------- summary


def test_summary_from_transactions_hand_computed():
    tx = pd.DataFrame(
        {
            "customer_id": pd.array(["001", "001", "001", "001", "002", "002", "003", "004", "001"], dtype="str"),
            "timestamp": pd.to_datetime(
                [
                    "2024-01-01 09:00",  # 001 first day: 10 + 5 merged
                    "2024-01-01 18:00",
                    "2024-01-08 12:00",  # 001 repeat day worth 20, refund of -7 on it is not a purchase
                    "2024-01-08 13:00",
                    "2024-01-03 00:00",  # 002 first day
                    "2024-01-15 23:59",  # 002 repeat on the cutoff day, worth 0: still a purchase day
                    "2024-01-10 00:00",  # 003 only one purchase day
                    "2024-01-16 00:00",  # 004 only after the cutoff: no row
                    "2024-01-16 00:00",  # 001 after the cutoff: ignored
                ]
            ),
            "amount": [10.0, 5.0, 20.0, -7.0, 8.0, 0.0, 3.0, 9.0, 100.0],
        }
    )
    got = summary_from_transactions(tx, cutoff="2024-01-15", time_unit_days=1.0)
    expected = pd.DataFrame(
        {
            "frequency": [1.0, 1.0, 0.0],
            "recency": [7.0, 12.0, 0.0],
            "T": [14.0, 12.0, 5.0],
            "monetary_value": [20.0, 0.0, 0.0],
        },
        index=pd.Index(["001", "002", "003"], dtype="str", name="customer_id"),
    )
    pd.testing.assert_frame_equal(got, expected)
    # A caller's non-unique index must not misalign anything.
    same_index = summary_from_transactions(tx.set_axis([0] * len(tx)), cutoff="2024-01-15", time_unit_days=1.0)
    pd.testing.assert_frame_equal(same_index, expected)
    weeks = summary_from_transactions(tx, cutoff="2024-01-15")
    np.testing.assert_allclose(weeks[["recency", "T"]].to_numpy(), expected[["recency", "T"]].to_numpy() / 7.0)


def test_summary_counts_orders_when_asked():
    # 001: two orders on its first day (10 + 30), two on a later one (5 + 7) and a refund;
    # 002: one order a day; 003: three orders on its only day.
    rows = [("001", "2024-01-01 09:00", 10.0), ("001", "2024-01-01 18:00", 30.0), ("001", "2024-01-08 12:00", 5.0),
            ("001", "2024-01-08 13:00", 7.0), ("001", "2024-01-09 10:00", -4.0), ("002", "2024-01-03 00:00", 8.0),
            ("002", "2024-01-10 00:00", 6.0), ("003", "2024-01-12 08:00", 1.0), ("003", "2024-01-12 09:00", 2.0),
            ("003", "2024-01-12 10:00", 3.0)]  # fmt: skip
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    tx["customer_id"] = tx["customer_id"].astype("str")
    tx["timestamp"] = pd.to_datetime(tx["timestamp"]).astype("datetime64[ns]")
    h = prepare_history(Tables(transactions=tx), "2024-01-15")
    days, orders = btyd_summary(h, 1.0), btyd_summary(h, 1.0, count="orders")
    np.testing.assert_array_equal(days.frequency, [1.0, 1.0, 0.0])
    np.testing.assert_allclose(days.monetary_value, [12.0, 6.0, 0.0])
    # Orders: every purchase transaction but the first; the first day's value split over its orders.
    np.testing.assert_array_equal(orders.frequency, [3.0, 1.0, 2.0])
    np.testing.assert_allclose(orders.monetary_value, [(5.0 + 7.0 + 40.0 / 2) / 3, 6.0, (6.0 * 2 / 3) / 2])
    # Days between purchases do not change with what is counted.
    np.testing.assert_array_equal(orders.recency, days.recency)
    np.testing.assert_array_equal(orders.T, days.T)
    with pytest.raises(ValueError, match="purchase_days or orders"):
        btyd_summary(h, 1.0, count="transactions")


def test_summary_ignores_rows_after_cutoff():
    rng = np.random.default_rng(3)
    n = 500
    tx = pd.DataFrame(
        {
            "customer_id": pd.array(rng.integers(0, 60, n).astype(str), dtype="str"),
            "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90 * 24, n), unit="h"),
            "amount": rng.gamma(2.0, 20.0, n),
        }
    )
    future = tx.assign(timestamp=tx["timestamp"] + pd.Timedelta(days=120), amount=tx["amount"] * 3)
    before = summary_from_transactions(tx, cutoff="2024-02-15")
    after = summary_from_transactions(pd.concat([tx, future], ignore_index=True), cutoff="2024-02-15")
    pd.testing.assert_frame_equal(before, after)


def test_summary_rejects_time_of_day_cutoff():
    tx = pd.DataFrame(
        {"customer_id": pd.array(["1"], dtype="str"), "timestamp": pd.to_datetime(["2024-01-01"]), "amount": [1.0]}
    )
    with pytest.raises(ValueError, match="cutoff"):
        summary_from_transactions(tx, cutoff="2024-01-05 12:00")


# --------------------------------------------------------------------------- BG/NBD closed forms


def test_probability_alive_is_one_without_repeat_purchase():
    params = SOME_PARAMS[0]
    p = bgnbd_probability_alive(params, [0, 0, 0], [0, 0, 0], [0.0, 10.0, 500.0])
    np.testing.assert_array_equal(p, 1.0)


def test_probability_alive_higher_for_recent_last_purchase():
    params = SOME_PARAMS[0]
    p = bgnbd_probability_alive(params, [4, 4, 4], [38.0, 20.0, 2.0], [39.0, 39.0, 39.0])
    assert p[0] > p[1] > p[2]
    assert 0 < p[2] < p[0] <= 1
    # Bought right at T: only the drop-out odds a / (b + x - 1) are left.
    exact = bgnbd_probability_alive(params, [4], [39.0], [39.0])[0]
    assert exact == pytest.approx(1 / (1 + params.a / (params.b + 3)), rel=1e-12)


def test_probability_alive_stays_finite_for_heavy_buyers_gone_quiet():
    p = bgnbd_probability_alive(SOME_PARAMS[0], [2000, 2000], [1.0, 100.0], [100.0, 100.0])
    assert np.all(np.isfinite(p))
    assert p[0] == pytest.approx(0.0, abs=1e-300) and p[1] > 0.9


def test_expected_purchases_increase_with_horizon():
    params = SOME_PARAMS[0]
    t = np.array([0.0, 1.0, 4.0, 26.0, 52.0, 520.0])
    cond = bgnbd_expected_purchases(params, t, [3] * t.size, [30.0] * t.size, [39.0] * t.size)
    new = bgnbd_expected_purchases_new(params, t)
    assert cond[0] == 0.0 and new[0] == 0.0
    assert np.all(np.diff(cond) > 0) and np.all(np.diff(new) > 0)
    assert isinstance(bgnbd_expected_purchases_new(params, 26.0), float)


def test_expected_purchases_new_is_the_conditional_of_a_customer_with_no_history():
    for params in SOME_PARAMS:
        t = np.array([1.0, 26.0, 300.0])
        np.testing.assert_allclose(
            bgnbd_expected_purchases(params, t, [0, 0, 0], [0, 0, 0], [0, 0, 0]),
            bgnbd_expected_purchases_new(params, t),
            rtol=1e-12,
        )
        assert bgnbd_expected_purchases_new(params, 26.0) == pytest.approx(
            expected_purchases_by_integration(params, 26.0, 0, 0.0, 0.0), rel=1e-8
        )


@pytest.mark.parametrize("params", SOME_PARAMS, ids=["a<1", "a>1"])
@pytest.mark.parametrize(
    ("t", "x", "tx", "T"),
    [
        (26.0, 0, 0.0, 39.0),
        (26.0, 1, 10.0, 39.0),
        (26.0, 5, 38.0, 39.0),
        (26.0, 5, 3.0, 39.0),
        (520.0, 0, 0.0, 39.0),
        (1.0, 2, 30.0, 78.0),
        (26.0, 80, 77.0, 78.0),
        (260.0, 300, 100.0, 104.0),
    ],
)
def test_expected_purchases_matches_numerical_integration(params, t, x, tx, T):
    got = bgnbd_expected_purchases(params, t, [x], [tx], [T])[0]
    assert got == pytest.approx(expected_purchases_by_integration(params, t, x, tx, T), rel=1e-7)


def test_expected_purchases_match_monte_carlo():
    # Tower property: among customers with the same x, the mean of E[Y | x, t_x, T] equals the mean
    # of the simulated future counts.
    params = BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5)
    rng = np.random.default_rng(11)
    T = rng.integers(7, 730, 200_000) / 7.0
    x, tx, future = simulate_bgnbd(params, T, 26.0, rng)
    expected = bgnbd_expected_purchases(params, 26.0, x, tx, T)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.02)
    for k in range(4):
        rows = x == k
        se = future[rows].std() / np.sqrt(rows.sum())
        assert abs(expected[rows].mean() - future[rows].mean()) < 4 * se


# --------------------------------------------------------------------------- BG/NBD fit


@pytest.fixture(scope="module")
def simulated_customers():
    params = BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5)
    rng = np.random.default_rng(7)
    T = rng.integers(1, 730, 100_000) / 7.0
    x, tx, _ = simulate_bgnbd(params, T, 26.0, rng)
    return params, x, tx, T


def test_fit_bgnbd_recovers_simulated_parameters(simulated_customers):
    true, x, tx, T = simulated_customers
    fit = fit_bgnbd(x, tx, T)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fit, name) == pytest.approx(getattr(true, name), rel=0.10), name


def test_fit_bgnbd_weights_equal_repeated_rows():
    x = np.array([0, 0, 1, 2, 5, 3, 0, 1])
    tx = np.array([0, 0, 4.0, 10.0, 30.0, 12.0, 0, 20.0])
    T = np.array([40.0, 20.0, 40.0, 30.0, 38.0, 39.0, 10.0, 25.0])
    counts = np.array([30, 12, 5, 4, 2, 3, 20, 6])
    weighted = fit_bgnbd(x, tx, T, weights=counts, penalizer=0.01)
    expanded = fit_bgnbd(np.repeat(x, counts), np.repeat(tx, counts), np.repeat(T, counts), penalizer=0.01)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(weighted, name) == pytest.approx(getattr(expanded, name), rel=1e-5)


def test_bgnbd_gradient_matches_finite_differences(simulated_customers):
    _, x, tx, T = simulated_customers
    ux, ix = np.unique(x[:2000], return_inverse=True)
    theta = np.array([0.3, 5.0, 0.7, 2.0])

    def total(th):
        return bgnbd._bgnbd_loglik_grad(th, ux, ix, tx[:2000], T[:2000], need_grad=False)[0].sum()

    grad = bgnbd._bgnbd_loglik_grad(theta, ux, ix, tx[:2000], T[:2000], need_grad=True)[1].sum(axis=1)
    step = 1e-6 * theta
    numeric = [(total(theta + h) - total(theta - h)) / (2 * h[i]) for i, h in enumerate(np.diag(step))]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


def test_bgnbd_rejects_recency_beyond_T():
    with pytest.raises(ValueError, match="recency"):
        fit_bgnbd([1, 2], [5.0, 50.0], [10.0, 40.0])


# --------------------------------------------------------------------------- Gamma-Gamma


def test_fit_gamma_gamma_recovers_simulated_parameters():
    true = GammaGammaParams(p=6.0, q=3.5, v=15.0)
    rng = np.random.default_rng(5)
    x = rng.geometric(0.3, 50_000).astype(float)
    nu = rng.gamma(true.q, 1.0 / true.v, x.size)
    m = rng.gamma(true.p * x, 1.0 / nu) / x  # mean of x purchase values, each Gamma(p, nu)
    # Rows without a repeat purchase or with no value must be left out, not break the fit.
    x_all = np.concatenate([x, np.zeros(1000), np.ones(10)])
    m_all = np.concatenate([m, np.zeros(1000), np.zeros(10)])
    fit = fit_gamma_gamma(x_all, m_all)
    for name in ("p", "q", "v"):
        assert getattr(fit, name) == pytest.approx(getattr(true, name), rel=0.10), name
    assert fit == fit_gamma_gamma(x, m)


def test_gamma_gamma_expected_value_shrinks_towards_population_mean():
    params = GammaGammaParams(p=6.0, q=3.5, v=15.0)
    population = params.p * params.v / (params.q - 1)
    ev = gamma_gamma_expected_value(params, [0, 0, 1, 10, 1000], [0.0, 123.0, 100.0, 100.0, 100.0])
    np.testing.assert_allclose(ev[:2], population)
    # The more purchases, the closer to the customer's own mean (100).
    assert population < ev[2] < ev[3] < ev[4] < 100.0
    assert ev[4] == pytest.approx(100.0, rel=1e-3)
    # Hand-computed: p (v + m x) / (p x + q - 1) for x = 1, m = 100.
    assert ev[2] == pytest.approx(6.0 * 115.0 / 8.5, rel=1e-12)


# --------------------------------------------------------------------------- CDNOW reference


@pytest.fixture(scope="module")
def cdnow(cdnow_dir):
    return pd.read_csv(cdnow_dir / "transactions.csv", dtype={"customer_id": str}, parse_dates=["timestamp"])


def test_cdnow_reference_fits(cdnow):
    summary = summary_from_transactions(cdnow, cutoff="1997-09-30")
    assert len(summary) == 23_570
    bg = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    gg = fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(CDNOW_PARAMS, name), rel=0.01), name
    for name in ("p", "q", "v"):
        assert getattr(gg, name) == pytest.approx(getattr(CDNOW_GG, name), rel=0.01), name


def test_cdnow_26_week_holdout_baseline(cdnow):
    # Protocol "cdnow-26w" of the CDNOW README: cutoff 1997-12-31, label window (cutoff, cutoff + 182 days].
    cutoff = pd.Timestamp("1997-12-31")
    summary = summary_from_transactions(cdnow, cutoff=cutoff)
    bg = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    gg = fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    purchases = bgnbd_expected_purchases(bg, 182 / 7, summary["frequency"], summary["recency"], summary["T"])
    predicted = purchases * gamma_gamma_expected_value(gg, summary["frequency"], summary["monetary_value"])
    start, end = cutoff + pd.Timedelta(days=1), cutoff + pd.Timedelta(days=183)
    window = cdnow[(cdnow["timestamp"] >= start) & (cdnow["timestamp"] < end)]
    actual = window.groupby("customer_id")["amount"].sum().reindex(summary.index, fill_value=0.0).to_numpy()
    assert actual.sum() == pytest.approx(476_154, abs=1)
    assert np.abs(predicted - actual).mean() == pytest.approx(21.18, abs=0.5)
    assert predicted.sum() == pytest.approx(461_698, rel=0.01)


def test_probability_no_purchase_known_values():
    params = btyd.BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x, tx, T = np.array([0.0, 2.0, 5.0]), np.array([0.0, 30.0, 10.0]), np.array([38.0, 38.0, 38.0])
    assert np.allclose(btyd.bgnbd_probability_no_purchase(params, 0.0, x, tx, T), 1.0)
    p = btyd.bgnbd_probability_no_purchase(params, 26.0, x, tx, T)
    # No repeat purchase: alive for sure, so only the gamma-Poisson zero term remains.
    assert p[0] == pytest.approx(((params.alpha + 38.0) / (params.alpha + 38.0 + 26.0)) ** params.r, rel=1e-12)
    # A customer who may have dropped out is at least as likely not to buy as 1 - P(alive).
    alive = btyd.bgnbd_probability_alive(params, x, tx, T)
    assert np.all(p >= 1 - alive) and np.all((p > 0) & (p < 1))
    # Longer horizons leave less room for no purchase.
    assert np.all(btyd.bgnbd_probability_no_purchase(params, 52.0, x, tx, T) < p)


def test_expected_purchases_are_finite_and_continuous_at_a_equal_one():
    # The fit leaves a at its start (exactly 1) when the data say nothing about dropout; the
    # formula's (a + b + x - 1) / (a - 1) factor is then 0/0, but the expectation is continuous in a.
    x, tx, T = np.array([0.0, 2.0, 5.0]), np.array([0.0, 10.0, 30.0]), np.array([20.0, 25.0, 40.0])
    at_one = bgnbd_expected_purchases(BGNBDParams(r=0.5, alpha=6.0, a=1.0, b=2.0), 26.0, x, tx, T)
    below = bgnbd_expected_purchases(BGNBDParams(r=0.5, alpha=6.0, a=1.0 - 1e-3, b=2.0), 26.0, x, tx, T)
    above = bgnbd_expected_purchases(BGNBDParams(r=0.5, alpha=6.0, a=1.0 + 1e-3, b=2.0), 26.0, x, tx, T)
    assert np.isfinite(at_one).all() and (at_one > 0).all()
    np.testing.assert_allclose(at_one, (below + above) / 2, rtol=1e-4)
    new = btyd.bgnbd_expected_purchases_new(BGNBDParams(r=0.5, alpha=6.0, a=1.0, b=2.0), 26.0)
    assert np.isfinite(new) and new > 0
