"""80 % intervals of the finance figures by simulation: CLV per group and revenue and margin per month.

Intervals (simulation)
----------------------
Each of ``n_simulations`` draws simulates every customer with one uniform V per customer and draw:
for the CLV the number of active horizons N with N ≥ k iff V ≤ r^k, rescaled so that the
simulated mean CLV equals the scores' (their spend curve, :mod:`training.curve`); for the forecast, active in horizon k iff
V ≤ (1 − p) · ratio_k, spending in it as in :mod:`serving.finance.forecast` (so the simulated mean
revenue equals the expected forecast). The same V makes the two agree customer by customer. On top:
a spend multiplier per customer G ~ Gamma(mean 1, CV ``spend_cv``) for the customer's spend level,
and a multiplier common to all customers Z ~ LogNormal(mean 1, CV ``common_cv``) for what moves the
whole base (model error, economy). Without Z the interval of a large base shrinks like 1 / √n and
says nothing about the model. ``common_cv`` = 0.10 was checked on the non-evaluated backtests of the
forecast: errors of the 12-month total of +10 %, +2 % and +10 %, all inside the 80 % interval (about
±13 % for a lognormal of CV 0.10); three backtests cannot calibrate it more finely.
80 % intervals are the 10th and 90th percentiles of the draws (:data:`INTERVAL`). Customers are
simulated in chunks, so memory stays bounded for millions of customers; a fixed seed gives the same
numbers for any chunk size.
"""

from __future__ import annotations

import math

import numpy as np

from serving import clv as C
from serving.finance.forecast import ForecastShape, month_horizon_overlap, plan_forecast
from training.config import ClvConfig

__all__ = ["INTERVAL", "interval", "simulate"]

#: Quantiles of the draws that bound an 80 % interval.
INTERVAL = (0.10, 0.90)


def simulate(
    churn_probability,
    spend_if_active,
    groupings: list[tuple[np.ndarray, int]],
    *,
    horizon_days: float,
    clv: ClvConfig,
    end_days,
    n_simulations: int,
    spend_cv: float,
    common_cv: float,
    seed: int,
    chunk_size: int,
    shape: ForecastShape | None = None,
    clv_mean=None,
) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Draws of the group-sum CLV and of the monthly revenue and margin (see the module docstring).

    One uniform V per customer and draw decides both the CLV's active horizons (N ≥ k iff V ≤ r^k,
    the design's retention) and the forecast's (active in horizon k iff V ≤ P(N ≥ k) of the
    forecast, :func:`serving.finance.forecast.plan_forecast`), so the two agree customer by customer
    as far as their definitions do.

    Parameters
    ----------
    churn_probability, spend_if_active : array-like, shape (n,)
        p and s (spend over H days if active, currency units) per customer, in ``shape``'s order.
    groupings : list of (codes, n_groups)
        Each: an int array of shape (n,) with values in 0..n_groups − 1; the CLV draws are summed
        per group.
    horizon_days : float
        H, days.
    clv : ClvConfig
        m, c, d and K of the CLV arithmetic.
    end_days : array-like of int, shape (months,)
        End of each forecast month in days after the scoring date
        (:func:`serving.finance.forecast.forecast_calendar`).
    n_simulations : int
        S, draws.
    spend_cv, common_cv : float
        Coefficients of variation of the per-customer gamma and the base-wide lognormal multiplier.
    seed : int
        Seed of :class:`numpy.random.SeedSequence`.
    chunk_size : int
        Customers simulated at once (memory ≈ chunk_size · n_simulations · 50 bytes).
    shape : ForecastShape, optional
        None: the design's retention r^k, no seasonality, for the forecast too.
    clv_mean : array-like, shape (n,), optional
        The scores' lifetime CLV per customer (from the spend curve): each customer's CLV draws are
        rescaled so that their mean is it, and the r^k draws only give their spread. A customer
        whose r^k CLV is 0 gets its CLV without spread.

    Returns
    -------
    dict
        ``clv_sums``: one array (n_groups, S) per grouping, the summed simulated CLV (currency
        units); ``revenue``, ``margin``: (months, S), currency units per month.
    """
    margin, cost_to_serve = clv.gross_margin, clv.cost_to_serve
    S, K = n_simulations, clv.lifetime_horizons
    delta = C.discount_per_horizon(horizon_days, clv.annual_discount_rate)
    # disc[n] = Σ_{k=1..n} (1 + δ)^-k: the discounted value of n active horizons of unit margin.
    disc = np.concatenate([[0.0], np.cumsum((1.0 + delta) ** -np.arange(1, K + 1, dtype=float))])
    end_days = np.asarray(end_days)
    overlap = month_horizon_overlap(horizon_days, end_days)
    k_f = overlap.shape[1]

    seq_z, seq_u, seq_g = np.random.SeedSequence(seed).spawn(3)
    sigma = math.sqrt(math.log1p(common_cv**2))
    z = np.exp(sigma * np.random.default_rng(seq_z).standard_normal(S) - sigma**2 / 2)
    rng_u, rng_g = np.random.default_rng(seq_u), np.random.default_rng(seq_g)
    gamma_shape = 1.0 / spend_cv**2 if spend_cv > 0 else None

    clv_sums = [np.zeros(n * S) for _, n in groupings]
    revenue = np.zeros((len(end_days), S))
    active_k = np.zeros((k_f, S))
    sim = np.arange(S)
    p_all = np.asarray(churn_probability, dtype=float)
    s_all = np.asarray(spend_if_active, dtype=float)
    target = None if clv_mean is None else np.asarray(clv_mean, dtype=float)
    for start in range(0, len(p_all), chunk_size):
        stop = min(start + chunk_size, len(p_all))
        p, s = p_all[start:stop], s_all[start:stop]
        v = 1.0 - rng_u.random((stop - start, S))  # in (0, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            # N = floor(log V / log r): P(N >= k) = P(V <= r^k) = r^k. r = 1 gives +inf (or NaN for
            # V = 1), both meaning "never churns": fmin maps them to the cap.
            x = np.log(v) * (1.0 / np.log1p(-p))[:, None]
        n_active = np.floor(np.fmin(x, K), out=x).astype(np.int64)
        del x
        spend = s[:, None] * z[None, :]
        if gamma_shape is not None:
            spend = spend * rng_g.gamma(gamma_shape, 1.0 / gamma_shape, size=(stop - start, S))
        value = (margin * spend - cost_to_serve) * disc[n_active]
        if target is not None:
            # Mean of the r^k draws: (m s − c) Σ_k (r / (1+δ))^k (the spend multipliers have mean 1).
            q = (1.0 - p) / (1.0 + delta)
            mean = (margin * s - cost_to_serve) * (q[:, None] ** np.arange(1, K + 1)).sum(axis=1)
            t = target[start:stop]
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(mean != 0, t / mean, 0.0)
            value = np.where((mean != 0)[:, None], value * factor[:, None], t[:, None])
        for (codes, n), acc in zip(groupings, clv_sums):
            acc += np.bincount((codes[start:stop, None] * S + sim).ravel(), weights=value.ravel(), minlength=n * S)
        plan = plan_forecast(p, shape, slice(start, stop), horizon_days=horizon_days, end_days=end_days)
        for k in range(k_f):
            on = v <= plan.survival[:, k : k + 1]
            revenue += plan.weights[k] @ np.where(on, spend, 0.0)
            active_k[k] += on.sum(axis=0)
    customers = overlap @ active_k
    return {
        "clv_sums": [a.reshape(n, S) for a, (_, n) in zip(clv_sums, groupings)],
        "revenue": revenue,
        "margin": margin * revenue - cost_to_serve * customers,
    }


def interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the 80 % interval over the last axis (the draws): quantiles :data:`INTERVAL`.

    Parameters
    ----------
    draws : ndarray, shape (..., S)

    Returns
    -------
    low, high : ndarray, shape (...)
    """
    lo, hi = np.quantile(draws, INTERVAL, axis=-1)
    return lo, hi
