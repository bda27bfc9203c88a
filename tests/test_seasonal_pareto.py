"""Pareto/NBD with a seasonal purchase rate and a calendar lifetime (features.btyd.seasonal_pareto)."""

from __future__ import annotations

import numpy as np
import pytest

from features.btyd.pareto_nbd import ParetoNBDParams, pareto_nbd_log_likelihood, pareto_nbd_probability_alive
from features.btyd.seasonal import SeasonalClock
from features.btyd.seasonal_pareto import (
    SeasonalHistory,
    _log_likelihood,
    _Pieces,
    fit_seasonal_pareto_nbd,
    seasonal_pareto_nbd_log_likelihood,
    seasonal_pareto_nbd_probability_alive,
)

PARAMS = ParetoNBDParams(r=0.9, alpha=2.2, s=1.5, beta=68.0)
PEAK = SeasonalClock((0.8,) * 10 + (2.4, 2.4))
CUTOFF = 19_000  # 2022-01-08


def _rows(n=400, seed=0) -> SeasonalHistory:
    """Made-up histories, frequent buyers included (up to 30 purchase days in a week)."""
    rng = np.random.default_rng(seed)
    cut = np.full(n, CUTOFF)
    first = cut - rng.integers(0, 900, n)
    last = first + (rng.random(n) * (cut - first)).astype(np.int64)
    x = np.where(last > first, rng.integers(1, 30, n), 0).astype(float)
    return SeasonalHistory(x, first, np.where(x > 0, last, first), cut)


@pytest.mark.parametrize(
    "params",
    [PARAMS, ParetoNBDParams(r=1.9, alpha=0.05, s=0.5, beta=5.0), ParetoNBDParams(r=0.3, alpha=30.0, s=0.3, beta=3.0), ParetoNBDParams(r=1.0, alpha=1.0, s=1.0, beta=1.0)],
    ids=["synthetic-like", "small-alpha", "slow-buyers-short-lives", "c-equals-one"],
)
def test_without_a_season_it_is_pareto_nbd(params):
    h = _rows(n=1000)
    tx, T = (h.last_day - h.first_day) / 7.0, (h.cutoff_day - h.first_day) / 7.0
    ours = seasonal_pareto_nbd_log_likelihood(params, h, SeasonalClock())
    np.testing.assert_allclose(ours, pareto_nbd_log_likelihood(params, h.frequency, tx, T), rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        seasonal_pareto_nbd_probability_alive(params, h, SeasonalClock()), pareto_nbd_probability_alive(params, h.frequency, tx, T), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize(
    ("params", "tolerance"), [(PARAMS, 5e-4), (ParetoNBDParams(r=1.9, alpha=0.05, s=0.5, beta=5.0), 1e-3)], ids=["synthetic-like", "small-alpha"]
)
def test_the_quadrature_has_converged(params, tolerance, monkeypatch):
    import features.btyd.seasonal_pareto as module

    h = _rows(seed=1)
    ours = seasonal_pareto_nbd_log_likelihood(params, h, PEAK)
    monkeypatch.setattr(module, "_NODES", 64)
    np.testing.assert_allclose(ours, seasonal_pareto_nbd_log_likelihood(params, h, PEAK), rtol=0, atol=tolerance)


def test_the_gradient_is_the_derivative_of_the_likelihood():
    h = _rows(seed=2)
    pieces, theta, w = _Pieces.build(h, PEAK, 7.0), np.array([PARAMS.r, PARAMS.alpha, PARAMS.s, PARAMS.beta]), np.ones(h.frequency.size)
    _, gradient = _log_likelihood(theta, h.frequency, pieces, w, gradient=True)
    for k in range(4):
        step = np.zeros(4)
        step[k] = 1e-6 * theta[k]
        up = _log_likelihood(theta + step, h.frequency, pieces, w, gradient=False)[0].sum()
        down = _log_likelihood(theta - step, h.frequency, pieces, w, gradient=False)[0].sum()
        assert gradient[k] == pytest.approx((up - down) / (2 * step[k]), rel=1e-3)  # nodes move with r and alpha


def test_a_customer_silent_through_the_quiet_months_is_more_likely_alive_than_in_calendar_time():
    # Bought every fortnight for a year, then nothing for the 90 days up to the cutoff.
    first, last = CUTOFF - 455, CUTOFF - 90
    h = SeasonalHistory(np.array([26.0]), np.array([first]), np.array([last]), np.array([CUTOFF]))
    spring = SeasonalClock((2.4,) * 3 + (0.8,) * 9)  # the 90 days are in quiet months
    flat = seasonal_pareto_nbd_probability_alive(PARAMS, h, SeasonalClock())[0]
    assert seasonal_pareto_nbd_probability_alive(PARAMS, h, spring)[0] > flat + 0.05
    # A customer who bought on the cutoff day is alive whatever the season.
    today = SeasonalHistory(np.array([3.0]), np.array([first]), np.array([CUTOFF]), np.array([CUTOFF]))
    assert seasonal_pareto_nbd_probability_alive(PARAMS, today, PEAK)[0] == 1.0


def test_the_fit_needs_a_repeat_purchase():
    h = SeasonalHistory(np.zeros(3), np.full(3, CUTOFF - 10), np.full(3, CUTOFF - 10), np.full(3, CUTOFF))
    with pytest.raises(ValueError, match="repeat purchase"):
        fit_seasonal_pareto_nbd(h, PEAK, start=PARAMS)
    with pytest.raises(ValueError, match="first_day <= last_day"):
        SeasonalHistory(np.ones(1), np.array([CUTOFF]), np.array([CUTOFF - 1]), np.array([CUTOFF]))


def test_a_large_book_is_fitted_on_a_sample_bounded_in_customers_and_month_pieces(monkeypatch, caplog):
    import features.btyd.lifetime as lifetime

    h = _rows(n=3000, seed=3)
    monkeypatch.setattr(lifetime, "SEASONAL_FIT_PIECES", 5_000)
    with caplog.at_level("INFO", logger="features.btyd.lifetime"):
        sample = h.select(lifetime._fit_sample_index(h))
    months = lambda day: day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)  # noqa: E731
    assert 0 < sample.frequency.size < 3000
    assert (months(sample.cutoff_day) - months(sample.last_day) + 1).sum() <= 5_000
    assert lifetime._fit_sample_index(h).size == sample.frequency.size  # the same sample every time
    assert "fitted on a sample" in caplog.text
    monkeypatch.setattr(lifetime, "SEASONAL_FIT_CUSTOMERS", 100)
    assert lifetime._fit_sample_index(h).size == 100
