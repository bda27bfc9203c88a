"""The shifted-beta-geometric model (features.btyd.shifted_beta_geo) against published values and oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad

from features.btyd.shifted_beta_geo import (
    SBGParams,
    _loglik_grad,
    fit_sbg,
    sbg_churn_probability,
    sbg_discounted_residual_periods,
    sbg_expected_residual_periods,
    sbg_log_likelihood,
    sbg_survival,
)

# Fader & Hardie (2007), "How to project customer retention": customers of a cohort of 1,000 still
# subscribed at the start of years 0..12; years 0..7 are the calibration data, 8..12 the holdout.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491, 468, 445, 427, 409, 394]


def _cohort_rows(survivors):
    s = np.asarray(survivors[:8], dtype=float)
    periods = np.r_[np.arange(1, 8), 7]
    churned = np.r_[np.ones(7, dtype=bool), False]
    return periods, churned, np.r_[s[:-1] - s[1:], s[-1]]


@pytest.mark.parametrize(
    ("survivors", "alpha", "beta"), [(REGULAR, 0.704, 1.182), (HIGH_END, 0.668, 3.806)], ids=["regular", "high_end"]
)
def test_fit_reproduces_the_papers_estimates_and_projects_the_holdout(survivors, alpha, beta):
    periods, churned, weights = _cohort_rows(survivors)
    params = fit_sbg(periods, churned, weights=weights)
    # The paper prints three decimals.
    assert params.alpha == pytest.approx(alpha, abs=6e-4)
    assert params.beta == pytest.approx(beta, abs=6e-4)
    projected = 1000 * sbg_survival(params, np.arange(8, 13))
    np.testing.assert_allclose(projected, survivors[8:], rtol=0.05)


def test_survival_is_the_product_of_the_retention_rates():
    p = SBGParams(alpha=0.7, beta=1.2)
    t = np.arange(1, 30)
    retention = (p.beta + t - 1) / (p.alpha + p.beta + t - 1)
    np.testing.assert_allclose(sbg_survival(p, t), np.cumprod(retention), rtol=1e-12)
    lost = -np.diff(np.r_[1.0, sbg_survival(p, t)])
    np.testing.assert_allclose(np.exp(sbg_log_likelihood(p, t, np.ones_like(t, dtype=bool))), lost, rtol=1e-10)


def test_churn_probability_interpolates_and_conditions_on_tenure():
    p = SBGParams(alpha=1.3, beta=4.0)
    np.testing.assert_allclose(sbg_churn_probability(p, 0, 1), p.alpha / (p.alpha + p.beta), rtol=1e-12)
    np.testing.assert_allclose(sbg_churn_probability(p, 3, 2), 1 - sbg_survival(p, 5) / sbg_survival(p, 3))
    half = sbg_churn_probability(p, 3, 0.5)
    assert 0 < half < sbg_churn_probability(p, 3, 1)
    # Longer tenure, lower churn: the customers left are the loyal ones.
    assert np.all(np.diff(sbg_churn_probability(p, np.arange(0, 60), 6)) < 0)


@pytest.mark.parametrize("renewals", [0, 3, 24.5])
def test_discounted_residual_periods_is_the_series(renewals):
    p = SBGParams(alpha=0.7, beta=1.2)
    g = 1.10 ** (-1 / 12)
    k = np.arange(1, 20_000)
    series = np.sum(g**k * sbg_survival(p, renewals + k) / sbg_survival(p, renewals))
    assert sbg_discounted_residual_periods(p, renewals, g) == pytest.approx(series, rel=1e-9)
    with pytest.raises(ValueError, match="discount_factor"):
        sbg_discounted_residual_periods(p, renewals, 1.0)


def test_expected_residual_periods_closed_form_and_heavy_tail():
    p = SBGParams(alpha=3.0, beta=5.0)
    k = np.arange(1, 200_000)
    series = np.sum(sbg_survival(p, 4 + k) / sbg_survival(p, 4))
    assert sbg_expected_residual_periods(p, 4) == pytest.approx(series, rel=1e-4)
    assert np.isinf(sbg_expected_residual_periods(SBGParams(alpha=0.9, beta=5.0), 4))


def test_gradient_matches_finite_differences():
    t = np.array([1.0, 2.0, 5.0, 0.0, 3.5, 7.0])
    c = np.array([True, True, True, False, False, False])
    w = np.array([3.0, 2.0, 1.0, 4.0, 2.0, 5.0])
    err = check_grad(
        lambda th: w @ _loglik_grad(th, t, c, False)[0],
        lambda th: _loglik_grad(th, t, c, True)[1] @ w,
        np.array([0.8, 2.5]),
    )
    assert err < 1e-5


def test_fit_recovers_simulated_parameters():
    rng = np.random.default_rng(7)
    n = 40_000
    theta = rng.beta(1.6, 6.0, n)
    lifetime = rng.geometric(theta)
    observed = rng.integers(1, 40, n)  # periods each customer could be watched
    churned = lifetime <= observed
    periods = np.where(churned, lifetime, observed)
    params = fit_sbg(periods, churned)
    assert params.alpha == pytest.approx(1.6, rel=0.08)
    assert params.beta == pytest.approx(6.0, rel=0.08)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="some churned rows"):
        fit_sbg([3, 4], [False, False])
    with pytest.raises(ValueError, match="periods >= 1 for a churned row"):
        fit_sbg([0, 4], [True, False])
    with pytest.raises(ValueError, match="one length"):
        sbg_log_likelihood(SBGParams(1.0, 1.0), [1, 2], [True])
